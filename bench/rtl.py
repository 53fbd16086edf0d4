"""RTL benchmarks (issue 4): laggy-vs-fast prefix-sum loss, cycles against the bounds of
spec/loas.md section 9, and RTL simulation speed of the 16-TPPE core.

Usage: python bench/rtl.py [WORKLOAD] [--rtl LAYER] [--simulator verilator|icarus]
Without WORKLOAD it uses traces/default when present, else a synthetic workload at realistic
densities (silent ratio 0.75, weight density 0.03). Cycle figures come from sim/tppe.py, which the
tests hold exact against the RTL; --rtl also runs LAYER through the RTL core (build: minutes the
first time) and records simulated cycles per second. Writes bench/results/rtl.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim.config import LoASConfig  # noqa: E402
from sim.golden import match_counts  # noqa: E402
from sim.tppe import core_cycles  # noqa: E402
from sim.trace import Geometry, TRACES_DIR, load_workload  # noqa: E402


def _workload(name):
    if name:
        return load_workload(name)
    if (TRACES_DIR / "default" / "manifest.yaml").exists():
        return load_workload("default")
    from sim.synthetic import write_random_workload

    d = Path(tempfile.mkdtemp(prefix="loas-bench-")) / "synthetic"
    write_random_workload(d, {
        "conv2": Geometry(64, 32, 32, 3, 1, 1, 64),
        "conv3": Geometry(64, 16, 16, 3, 1, 1, 128),
        "conv4": Geometry(128, 16, 16, 3, 1, 1, 128),
        "fc": Geometry.fc(2048, 10),
    }, silent_ratio=0.75, weight_density=0.03, seed=0)
    return load_workload(d)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("workload", nargs="?")
    ap.add_argument("--rtl", help="also run this layer through the RTL core")
    ap.add_argument("--simulator", default="verilator")
    args = ap.parse_args()
    wl = _workload(args.workload)
    cfg = LoASConfig()
    fast = LoASConfig(laggy_adders=cfg.chunk_bits)
    layers = []
    for layer in wl.layers():
        words, weights = layer.words(0), layer.weights_kn()
        t0 = time.perf_counter()
        lag = core_cycles(words, weights, cfg)
        model_s = time.perf_counter() - t0
        fst = core_cycles(words, weights, fast)
        M, K = words.shape
        N = weights.shape[1]
        C = -(-K // cfg.chunk_bits)
        work = int(match_counts(words, weights).sum())
        work_bound = work / cfg.pes
        scan_bound = M * N * C / cfg.pes
        layers.append({
            "layer": layer.name, "M": M, "K": K, "N": N,
            "cycles_laggy": lag.total, "cycles_fast_both_sides": fst.total,
            "laggy_loss_pct": 100.0 * (lag.total - fst.total) / fst.total,
            "work_bound": work_bound, "scan_bound": scan_bound,
            "vs_max_bound_pct": 100.0 * (lag.total / max(work_bound, scan_bound) - 1),
            "fast_vs_max_bound_pct": 100.0 * (fst.total / max(work_bound, scan_bound) - 1),
            "stalls": lag.stalls, "model_s": round(model_s, 3),
        })
        print(f"{layer.name:<8} laggy {lag.total:>9} fast {fst.total:>9} loss {layers[-1]['laggy_loss_pct']:6.1f} %"
              f"  vs max(bounds) {layers[-1]['vs_max_bound_pct']:6.1f} %")
    res = {"workload": wl.name, "config": "loas (P=16, T=4, W=128, 16 laggy adders, FIFO 8)", "layers": layers}
    if args.rtl:
        from hw.cosim import run_core
        from hw.host import core_params

        layer = wl.layer(args.rtl)
        words, weights = layer.words(0), layer.weights_kn()
        params = core_params(words, weights, bias=layer.bias, T=layer.T)
        r = run_core(words, weights, layer.bias, layer.lif, layer.T, layer.n_mask, params, simulator=args.simulator)
        res["rtl"] = {"layer": args.rtl, "simulator": args.simulator, "rtl_cycles": r["rtl_cycles"],
                      "sim_s": r["sim_wall_s"], "build_s": r["build_s"],
                      "sim_cycles_per_s": r["rtl_cycles"] / r["sim_wall_s"]}
        print(res["rtl"])
    out = ROOT / "bench" / "results" / "rtl.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
