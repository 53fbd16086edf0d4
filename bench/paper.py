"""Benchmark of the paper-method models (sim/paper.py, ``--fidelity paper``): every spike layer of
VGG16 (CIFAR-10 shapes, or a trace workload) on LoAS (mntk, nmtk) and the three dual-sparse
baselines, with the number of tile pairs the buffer model walks.

Usage: .venv/bin/python bench/paper.py [--workload DIR]
Writes bench/results/paper.json and bench/results/paper.md. Target: < 10 s for VGG16.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.config import LoASConfig  # noqa: E402
from sim.designs import PAPER  # noqa: E402
from sim.fidelity import run_paper  # noqa: E402
from sim.paper import SPECS  # noqa: E402
from sim.report import synthetic_inputs, workload_inputs  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"


def tile_pairs(spec, M, K, N, T) -> int:
    s = SPECS[spec]
    return (1 if s.packed else T) * -(-M // s.tm) * -(-N // s.tn) * -(-K // s.tk)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workload", help="a trace workload instead of synthetic VGG16 layers")
    args = ap.parse_args()
    inputs = workload_inputs(args.workload) if args.workload else synthetic_inputs(4)
    rows = []
    t_all = time.perf_counter()
    for d, order in [("loas", "mntk"), ("loas", "nmtk"), *((b, "mntk") for b in PAPER if b != "loas")]:
        cfg = dataclasses.replace(LoASConfig(), loop_order=order)
        t0 = time.perf_counter()
        res = run_paper(d, inputs, cfg)
        spec = f"loas-{order}" if d == "loas" else d
        rows.append({"design": spec, "seconds": round(time.perf_counter() - t0, 3),
                     "cycles": sum(p.cycles for p in res),
                     "tile_pairs": sum(tile_pairs(spec, li.words.shape[0], li.words.shape[1], li.weights.shape[1],
                                                  li.T) for li in inputs)})
    wall = time.perf_counter() - t_all
    wl = args.workload or "synthetic VGG16 (CIFAR-10 shapes, 74 % silent, 98.23 % weight sparsity)"
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "paper.json").write_text(json.dumps({"workload": wl, "seconds": round(wall, 3), "rows": rows}, indent=2)
                                    + "\n")
    lines = ["# bench/paper.py results", "", f"workload: {wl}, {len(inputs)} layers", "",
             f"VGG16 through the paper-method models of all five designs: **{wall:.2f} s** (target < 10 s)", "",
             "| design | seconds | cycles | tile pairs |", "|---|---:|---:|---:|"]
    lines += [f"| {r['design']} | {r['seconds']:.3f} | {r['cycles']} | {r['tile_pairs']} |" for r in rows]
    (OUT / "paper.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if wall < 10 else 1


if __name__ == "__main__":
    sys.exit(main())
