"""Benchmark of the Dask engine of `loas sweep` (sim/dist.py): LoAS design points over the VGG16 layers
with the cycle model, run (a) directly in this process, (b) on the embedded cluster with 1 worker,
(c) with 2 workers. Reports points/s, the 2-worker scaling ratio and the engine's overhead per task
(submit, scatter, result transfer and the store's Parquet write) against calling the model directly.

A point is one (configuration, layer): 48 configurations (pes x lookahead x result_slots x schedule)
over VGG16's spike layers (the 12 convs of the imported data: 576 points; 13 layers with the classifier
in the synthetic one, --synthetic: 624). The workload is the real LoAS VGG16 spikes imported from
../shared/data/prosperity-loas (synthetic pruned weights, 98.23 % sparse) when present, else the
synthetic VGG16 at the paper's densities.

Usage: .venv/bin/python bench/sweep.py [--quick] [--synthetic]
Writes bench/results/sweep.json and bench/results/sweep.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from sim.config import LoASConfig  # noqa: E402
from sim.energy import load_energy  # noqa: E402
from sim.report import layer_point, sweep, synthetic_inputs, vgg16_shapes, workload_inputs  # noqa: E402

OUT = ROOT / "bench" / "results"
# The shared data beside the checkout (a worktree sits one level deeper), or $LOAS_SHARED_DATA.
_DATA = [Path(os.environ["LOAS_SHARED_DATA"])] if "LOAS_SHARED_DATA" in os.environ else \
    [ROOT.parent / "shared" / "data", ROOT.parent.parent / "shared" / "data"]
PKL = next((d / "prosperity-loas" / "vgg16_cifar10_loas.pkl" for d in _DATA
            if (d / "prosperity-loas" / "vgg16_cifar10_loas.pkl").is_file()), Path("/nonexistent"))
PARAMS = {"pes": [4, 8, 12, 16, 32, 64], "lookahead": [1, 4], "result_slots": [1, 4], "schedule": ["lockstep", "dynamic"]}
QUICK = {"pes": [8, 16], "lookahead": [1, 4], "result_slots": [4], "schedule": ["lockstep", "dynamic"]}


def workload(tmp: Path, synthetic: bool):
    """(sweep workloads argument, layers, description)."""
    if not synthetic and PKL.is_file():
        from models.prosperity import import_prosperity

        print(f"importing {PKL} ...", flush=True)
        wl = tmp / "vgg16_prosperity"
        import_prosperity(PKL, wl, name="vgg16_prosperity", weight_sparsity=0.9823, seed=0)
        return [str(wl)], workload_inputs(wl), f"real LoAS VGG16 spikes ({PKL.name}, imported; weights synthetic " \
                                                f"98.23 % sparse, seed 0)"
    return None, synthetic_inputs(4), "synthetic VGG16 (sim/synthetic.py, 74 % silent, 98.23 % weight sparsity)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="8 configurations instead of 48")
    ap.add_argument("--synthetic", action="store_true", help="synthetic VGG16 even if the shared data is present")
    args = ap.parse_args()
    params = QUICK if args.quick else PARAMS
    base, econf = LoASConfig(), load_energy()
    with tempfile.TemporaryDirectory(prefix="loas-bench-sweep-") as tmp:
        tmp = Path(tmp)
        wls, layers, desc = workload(tmp, args.synthetic)

        cfgs = [LoASConfig(**dict(zip(params, v))) for v in itertools.product(*params.values())]
        n = len(cfgs) * len(layers)
        print(f"{len(cfgs)} configurations x {len(layers)} layers = {n} points, directly ...", flush=True)
        t0 = time.perf_counter()
        direct = [layer_point(li, cfg, ("loas",), econf)["loas.cycles"] for cfg in cfgs for li in layers]
        t_direct = time.perf_counter() - t0
        runs = {}
        for workers in (1, 2):
            print(f"{n} points on the embedded cluster, {workers} worker(s) ...", flush=True)
            t0 = time.perf_counter()
            res = sweep(params, base=base, designs=("loas",), workloads=wls, out=tmp / f"w{workers}", econf=econf,
                        workers=workers, progress=True)
            wall = time.perf_counter() - t0
            assert not res.failures and res.computed == n, res.failures[:3]
            assert sum(r["cycles"] for r in res.rows) == sum(direct), "engine and direct runs disagree"
            runs[workers] = {"wall_s": round(wall, 2), "run_s": round(res.seconds, 2),
                             "startup_s": round(wall - res.seconds, 2), "points_per_s": round(n / res.seconds, 2)}
        # The engine's cost alone: 512 points on the classifier layer (about a millisecond each).
        tiny = {"pes": list(range(1, 65)), "lookahead": [1, 2, 4, 8], "result_slots": [1, 4]}
        fc = synthetic_inputs(4, shapes=[s_ for s_ in vgg16_shapes() if s_[0] == "fc1"])[0]
        tcfgs = [LoASConfig(**dict(zip(tiny, v))) for v in itertools.product(*tiny.values())]
        print(f"{len(tcfgs)} classifier-layer points, directly and on 1 worker ...", flush=True)
        t0 = time.perf_counter()
        for cfg in tcfgs:
            layer_point(fc, cfg, ("loas",), econf)
        t_tiny = time.perf_counter() - t0
        res = sweep(tiny, base=base, designs=("loas",), layer="fc1", out=tmp / "tiny", econf=econf, workers=1,
                    progress=True)
        assert not res.failures and res.computed == len(tcfgs)
        tiny_ms = (res.seconds - t_tiny) / len(tcfgs) * 1e3
    overhead_ms = (runs[1]["run_s"] - t_direct) / n * 1e3
    out = {
        "workload": desc, "points": n, "configurations": len(cfgs), "layers": len(layers), "params": params,
        "designs": ["loas"], "direct_s": round(t_direct, 2), "direct_points_per_s": round(n / t_direct, 2),
        "dask": {str(k): v for k, v in runs.items()},
        "scaling_2_over_1": round(runs[2]["points_per_s"] / runs[1]["points_per_s"], 3),
        "overhead_ms_per_task": round(overhead_ms, 2),
        "tiny": {"points": len(tcfgs), "direct_s": round(t_tiny, 3), "dask_1_worker_s": round(res.seconds, 2),
                 "overhead_ms_per_task": round(tiny_ms, 2)},
        "machine": {"cpus": os.cpu_count(), "load_avg_1min": round(os.getloadavg()[0], 2),
                    "python": platform.python_version()},
        "command": "make bench (or .venv/bin/python bench/run.py sweep)",
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "sweep.json").write_text(json.dumps(out, indent=2) + "\n")
    md = [
        "# bench/sweep.py results", "",
        f"workload: {desc}", "",
        f"{n} LoAS design points ({len(cfgs)} configurations x {len(layers)} layers), cycle model; "
        f"load average {out['machine']['load_avg_1min']} on {os.cpu_count()} CPUs", "",
        "| run | seconds | points/s |", "|---|---:|---:|",
        f"| direct (one process, no engine) | {t_direct:.1f} | {n / t_direct:.2f} |",
        *[f"| Dask, {k} worker{'s' * (k > 1)} (+{v['startup_s']:.1f} s cluster start) | {v['run_s']:.1f} | "
          f"{v['points_per_s']:.2f} |" for k, v in runs.items()],
        "",
        f"scaling 2 / 1 workers: **{out['scaling_2_over_1']:.2f}x**; engine overhead per task (1 worker "
        f"against direct): **{overhead_ms:.1f} ms**", "",
        f"engine alone: {len(tcfgs)} classifier-layer points (model {t_tiny / len(tcfgs) * 1e3:.2f} ms each) "
        f"take {res.seconds:.1f} s on 1 worker: **{tiny_ms:.1f} ms per task** (submit, result, store write)", "",
        "command: `make bench` (all benchmarks) or `.venv/bin/python bench/run.py sweep`", "",
    ]
    (OUT / "sweep.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
