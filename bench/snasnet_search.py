"""SNASNet search speed: seconds per scored candidate (score only, and with the hardware objective).

The settings of the issue that asked for the speed-up: Fashion-MNIST, C = 32, T = 5, 2 batches of 64,
the same 4 cells (redraw sampler, seed 0) for every implementation. The machine's 2 cores are shared,
so each figure is the median of RUNS runs and the 1-minute load average is recorded beside it. The
script runs unchanged against an older checkout (``PYTHONPATH=<old tree> python -m bench.snasnet_search
--label before``), which is how the "before" figure was measured; it merges its figures into
bench/results/snasnet_search.json under ``--label``.

    PYTHONPATH=$PWD OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=2 .venv/bin/python -m bench.snasnet_search --label after
"""

import argparse
import inspect
import json
import os
import statistics
import time
from pathlib import Path

import torch

from models import snasnet_search as ss
from models.snasnet import build_snasnet, parse_cnt_mat

RUNS = 3
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
    times = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        res = ss.search(build, xs, num_search=len(cells), candidates=cells, progress=False, **extra)
        times.append((time.perf_counter() - t0) / len(cells))
    rec = {"seconds_per_candidate": statistics.median(times), "runs": times, "load_avg_1min_before": load,
           "settings": {"dataset": "fashion-mnist", "channels": args.channels, "T": args.T,
                        "batch_size": args.batch_size, "batches": 2, "cells": [str(c) for c in cells],
                        "threads": args.threads, "hw": args.hw},
           "scores": [c.score for c in sorted(res, key=lambda c: c.index)]}
    data = json.loads(OUT.read_text()) if OUT.exists() else {}
    data[args.label] = rec
    if "before" in data and "after" in data:
        data["speedup"] = data["before"]["seconds_per_candidate"] / data["after"]["seconds_per_candidate"]
    tmp = OUT.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(OUT)
    print(f"{args.label}: {rec['seconds_per_candidate']:.2f} s per candidate (load {load:.1f}); {OUT}")


if __name__ == "__main__":
    main()
