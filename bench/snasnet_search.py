"""SNASNet search speed: seconds per scored candidate (score only, and with the hardware objective).

Fashion-MNIST, C = 32, T = 5, 2 batches of 64, the same 4 cells (redraw sampler, seed 0) for every
implementation. In-process (``search``, ``--threads`` torch threads) or, with ``--engine N``, on the
Dask engine (``run_search`` on an embedded cluster of N single-threaded workers, started and warmed
up before the clock starts; each cell scored twice, under two draw indices, so that every worker has
work): seconds per candidate = wall time / candidates, and the CPU seconds per candidate (this
process, or the workers) that a shared machine's load inflates less. The machine's 2 cores are
shared, so each figure is the median (and the minimum) of RUNS runs, with the 1-minute load average
(take them on an otherwise idle machine: another process halves them). The scores are recorded;
implementations must agree on them to the float rounding of their layouts. The in-process mode runs
unchanged against an older checkout, from a copy outside bench/ (whose sim.py would shadow the
package); figures are merged into bench/results/snasnet_search.json under ``--label``, with the
speed-ups over the :data:`BASES` labels. Each record also holds the candidates' GEMM work
(convolutions, linear layers, the kernel's Gram matrices): the floor under a candidate's time at the
machine's GEMM rate.

    git worktree add --detach /tmp/issue 957aab8^ && cp bench/snasnet_search.py /tmp/
    (cd /tmp && PYTHONPATH=/tmp/issue LOAS_BENCH_OUT=$OLDPWD/bench/results/snasnet_search.json \
        OMP_NUM_THREADS=1 $OLDPWD/.venv/bin/python snasnet_search.py --label issue --threads 2)
    PYTHONPATH=$PWD OMP_NUM_THREADS=1 .venv/bin/python -m bench.snasnet_search --label after --threads 2
    PYTHONPATH=$PWD OMP_NUM_THREADS=1 .venv/bin/python -m bench.snasnet_search --label after-engine-2-workers --engine 2
"""

import argparse
import inspect
import json
import math
import os
import statistics
import time
from pathlib import Path

import torch

from models import snasnet_search as ss
from models.snasnet import build_snasnet, parse_cnt_mat

RUNS = 3
#: Labels the speed-ups are taken against: ``issue``, the code when the speed-up was asked for
#: (957aab8^), and ``before``, the code before the scoring rewrite (90c428b^); each at 2 threads.
BASES = ("issue", "before")
OUT = Path(os.environ.get("LOAS_BENCH_OUT", Path(__file__).resolve().parent / "results" / "snasnet_search.json"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--label", required=True)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--T", type=int, default=5)
    ap.add_argument("--cells", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hw", action="store_true", help="also the LoAS/SparTen-S cost (new code only)")
    ap.add_argument("--engine", type=int, default=0, help="score on the Dask engine with this many workers")
    ap.add_argument("--runs", type=int, default=RUNS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:
        from models.data import batches, load_dataset

        ds = load_dataset("fashion-mnist", None, "train")
        xs = [x for _, (x, _) in zip(range(2), batches(ds, args.batch_size, shuffle=True, seed=0))]
    except Exception:  # no dataset installed: the timing does not depend on the pixels
        xs = [torch.randn(args.batch_size, 1, 28, 28) for _ in range(2)]
    kw = {"sampler": "redraw"} if "sampler" in inspect.signature(ss.draw_candidates).parameters else {}
    cells = [parse_cnt_mat(str(m)) for m in ss.draw_candidates(args.cells, 0, **kw)]

    def build(m):
        return build_snasnet(m, "fashion-mnist", channels=args.channels, T=args.T)

    extra = {"hw": True} if args.hw else {}
    load = os.getloadavg()[0]
    times, cpu = [], []
    if args.engine:
        res, times, cpu = _engine(args, xs, cells, extra)
    else:
        for _ in range(args.runs):
            t0, c0 = time.perf_counter(), time.process_time()
            res = ss.search(build, xs, num_search=len(cells), candidates=cells, progress=False, **extra)
            times.append((time.perf_counter() - t0) / len(cells))
            cpu.append((time.process_time() - c0) / len(cells))
    rec = {"seconds_per_candidate": statistics.median(times), "min_seconds_per_candidate": min(times),
           "gemm_gmac_per_candidate": (g := _gemm_gmac(build, cells, xs)),
           # on the engine: one worker's rate times the workers (their scaling is not measured)
           "gemm_gmac_per_s": (r := _conv_rate(1 if args.engine else args.threads) * max(1, args.engine)),
           "gemm_floor_seconds_per_candidate": g / r,
           "cpu_seconds_per_candidate": statistics.median(cpu), "runs": times, "load_avg_1min_before": load,
           "settings": {"dataset": "fashion-mnist", "channels": args.channels, "T": args.T,
                        "batch_size": args.batch_size, "batches": 2, "cells": [str(c) for c in cells],
                        "threads": 1 if args.engine else args.threads, "engine_workers": args.engine,
                        "hw": args.hw},
           "scores": [c.score for c in sorted(res, key=lambda c: c.index)][: len(cells)]}
    data = json.loads(OUT.read_text()) if OUT.exists() else {}
    data[args.label] = rec
    for name in BASES:
        base = data.get(name)
        if base:
            data[f"speedup_over_{name}"] = {k: base["seconds_per_candidate"] / v["seconds_per_candidate"]
                                            for k, v in data.items() if isinstance(v, dict) and "runs" in v}
    tmp = OUT.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(OUT)
    print(f"{args.label}: {rec['seconds_per_candidate']:.2f} s per candidate (load {load:.1f}); {OUT}")


def _gemm_gmac(build, cells, xs) -> float:
    """Multiply-accumulates (1e9) per candidate in GEMM-shaped work, the part no rewrite of the
    elementwise code removes: convolutions, linear layers and the kernel's Gram matrices (S x B x B x N
    per spiking-neuron call), counted by hooks on one untimed forward per cell and batch."""
    from spikingjelly.activation_based import neuron

    total = 0

    def layer(mod, inp, out):
        nonlocal total
        k = mod.in_channels * mod.kernel_size[0] * mod.kernel_size[1] if isinstance(mod, torch.nn.Conv2d) \
            else mod.in_features
        total += out.numel() * k

    def lif(mod, inp, out):
        nonlocal total
        steps = out if mod.step_mode == "m" else out.unsqueeze(0)
        S, B = steps.shape[:2]
        total += S * B * B * steps[0, 0].numel()

    with torch.no_grad():
        for m in cells:
            torch.manual_seed(0)
            net = build(m).train()
            for mod in net.modules():
                if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
                    mod.register_forward_hook(layer)
                elif isinstance(mod, neuron.BaseNode):
                    mod.register_forward_hook(lif)
            for x in xs:
                net(x)
    return total / len(cells) / 1e9


def _conv_rate(threads: int) -> float:
    """GMAC/s of the cells' typical convolution (3x3, 32 -> 32 channels, 28 x 28, 320 maps of T x B,
    channels-last: oneDNN near the machine's FMA peak) on ``threads`` threads, best of 5."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    conv = torch.nn.Conv2d(32, 32, 3, 1, 1, bias=False).to(memory_format=torch.channels_last)
    x = (torch.rand(320, 32, 28, 28) < 0.2).float().contiguous(memory_format=torch.channels_last)
    best = math.inf
    with torch.no_grad():
        conv(x)
        for _ in range(5):
            t0 = time.perf_counter()
            conv(x)
            best = min(best, time.perf_counter() - t0)
    torch.set_num_threads(old)
    return 320 * 28 * 28 * 32 * 32 * 9 / best / 1e9


def _engine(args, xs, cells, extra):
    """``run_search`` on an embedded cluster of ``args.engine`` workers, started (and each worker's
    imports done) before the clock starts; every cell is scored twice (two draw indices, so two seeds)."""
    from distributed import Client

    from models.snasnet_search import NetSpec, run_search
    from sim import dist

    spec = NetSpec("fashion-mnist", args.channels, args.T)
    work = list(cells) * 2  # indices 0..n-1 as in-process, n..2n-1 the same cells again
    with dist.local_cluster(args.engine) as cluster:
        addr = cluster.scheduler_address
        tiny = NetSpec("fashion-mnist", 1, 1)
        run_search(tiny, [x[:2] for x in xs], cells[:1] * args.engine, seed=1, scheduler=addr, progress=False)
        times, cpu = [], []
        client = Client(addr)
        for _ in range(args.runs):
            c0 = client.run(time.process_time)
            t0 = time.perf_counter()
            res, oc = run_search(spec, xs, work, seed=0, scheduler=addr, progress=False, **extra)
            times.append((time.perf_counter() - t0) / len(work))
            c1 = client.run(time.process_time)
            cpu.append(sum(c1[w] - c0[w] for w in c1 if w in c0) / len(work))  # the workers' CPU time
            assert not oc.failures, oc.failures
        client.close()
    return res, times, cpu


if __name__ == "__main__":
    main()
