"""Benchmark of the cycle-level models: every spike layer of VGG16 (CIFAR-10 shapes) on LoAS and
the three dual-sparse baselines, plus how the time grows with M, K, N and density.

Usage: .venv/bin/python bench/sim.py [--workload DIR] [--layers DIR ...] [--quick]
Writes bench/results/sim.json and bench/results/sim.md. Target: < 10 s and < 2 GB peak for VGG16.
LoAS's model is the accelerator's timing (sim.memory.accel_timing); its time per layer is listed
for the main inputs, the default trace workload and every ``--layers`` workload.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.config import BufferConfig, LoASConfig, TileConfig  # noqa: E402
from sim.designs import DUAL_SPARSE  # noqa: E402
from sim.report import run_design, synthetic_inputs, totals, workload_inputs  # noqa: E402

DESIGNS = ("loas", *DUAL_SPARSE)
OUT = Path(__file__).resolve().parent / "results"


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def time_designs(inputs, cfg) -> dict:
    res = {}
    for d in DESIGNS:
        t0 = time.perf_counter()
        sims = run_design(d, inputs, cfg)
        res[d] = {"seconds": time.perf_counter() - t0, "cycles": totals(sims)["cycles"]}
    return res


#: The scaling grid's chip: tile memories for every point (an A tile of 32 rows x 4608 holds 38 k
#: spike words at 74 % silent, above the default a_nnz), in a buffer large enough for them.
SCALING_CFG = LoASConfig(tile=TileConfig(a_nnz=65536, b_nnz=65536), buffer=BufferConfig(capacity_kb=1024))


def loas_layers(inputs, cfg) -> list[dict]:
    """Seconds of LoAS's model (simulate_layer: accel_timing and the result) per layer."""
    from sim.loas import simulate_layer

    rows = []
    for li in inputs:
        t0 = time.perf_counter()
        s = simulate_layer(li.words, li.weights, cfg, T=li.T, out_words=li.out_words, name=li.name)
        rows.append({"layer": li.name, "M": s.M, "K": s.K, "N": s.N, "tiles": s.detail["tiles"],
                     "seconds": round(time.perf_counter() - t0, 4), "cycles": s.cycles})
    return rows


def scaling(cfg, quick: bool) -> list[dict]:
    base = dict(M=256, K=1152, N=128, wd=0.0177)
    grid = {"M": [64, 256, 1024], "K": [576, 1152, 4608], "N": [64, 128, 512], "wd": [0.0177, 0.1, 0.3]}
    if quick:
        grid = {k: v[:2] for k, v in grid.items()}
    rows = []
    for key, values in grid.items():
        for v in values:
            p = dict(base, **{key: v})
            inp = synthetic_inputs(4, weight_density=p["wd"], shapes=[("l", p["M"], p["K"], p["N"])])
            r = time_designs(inp, cfg)
            rows.append({"vary": key, "M": p["M"], "K": p["K"], "N": p["N"], "weight_density": p["wd"],
                         **{f"{d}_s": round(r[d]["seconds"], 4) for d in DESIGNS}})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workload", help="a trace workload instead of synthetic VGG16 layers")
    ap.add_argument("--quick", action="store_true", help="smaller scaling grid")
    ap.add_argument("--layers", nargs="*", default=[], help="trace workloads to time LoAS on, per layer")
    args = ap.parse_args()
    cfg = LoASConfig()
    inputs = workload_inputs(args.workload) if args.workload else synthetic_inputs(4)
    t0 = time.perf_counter()
    vgg = time_designs(inputs, cfg)
    wall = time.perf_counter() - t0
    peak = peak_mb()
    result = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "workload": args.workload or "synthetic VGG16 (CIFAR-10 shapes, 74 % silent, 98.23 % weight sparsity)",
        "layers": len(inputs),
        "vgg16_seconds": round(wall, 3),
        "vgg16_peak_rss_mb": round(peak, 1),
        "per_design": {d: {"seconds": round(v["seconds"], 3), "cycles": v["cycles"]} for d, v in vgg.items()},
        "scaling": scaling(SCALING_CFG, args.quick),
        "loas_layers": {"main": loas_layers(inputs, cfg), "default": loas_layers(workload_inputs("default"), cfg),
                        **{str(w): loas_layers(workload_inputs(w), cfg) for w in args.layers}},
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "sim.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# bench/sim.py results", "", f"workload: {result['workload']}, {len(inputs)} layers", "",
             f"VGG16, LoAS + SparTen-S + GoSPA-S + Gamma-S: **{wall:.2f} s**, peak RSS {peak:.0f} MB "
             f"(target < 10 s, < 2048 MB)", "", "| design | seconds | cycles |", "|---|---:|---:|"]
    lines += [f"| {d} | {v['seconds']:.3f} | {v['cycles']} |" for d, v in vgg.items()]
    lines += ["", "Scaling (one layer; base M=256, K=1152, N=128, weight density 0.0177; chip: the default with "
              "tile.a_nnz = tile.b_nnz = 65536 in a 1024 KiB buffer):", "",
              "| vary | M | K | N | density | " + " | ".join(f"{d} s" for d in DESIGNS) + " |",
              "|---|---:|---:|---:|---:|" + "---:|" * len(DESIGNS)]
    lines += [f"| {r['vary']} | {r['M']} | {r['K']} | {r['N']} | {r['weight_density']} | "
              + " | ".join(f"{r[f'{d}_s']:.3f}" for d in DESIGNS) + " |" for r in result["scaling"]]
    for w, rows in result["loas_layers"].items():
        lines += ["", f"LoAS per layer ({'the main inputs' if w == 'main' else 'workload ' + w}; "
                      f"total {sum(r['seconds'] for r in rows):.2f} s):", "",
                  "| layer | M | K | N | tiles | seconds | cycles |", "|---|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['layer']} | {r['M']} | {r['K']} | {r['N']} | {r['tiles']} | {r['seconds']:.3f} | {r['cycles']} |"
                  for r in rows]
    (OUT / "sim.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    ok = wall < 10 and peak < 2048
    print("PASS" if ok else "FAIL: over the 10 s / 2 GB target")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
