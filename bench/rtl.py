"""RTL benchmarks: laggy-vs-fast prefix-sum loss, cycles against the bounds of
spec/loas.md section 9, and RTL simulation speed of the 16-TPPE core.

Usage: python bench/rtl.py [WORKLOAD] [--rtl LAYER] [--simulator verilator|icarus]
Without WORKLOAD it models a synthetic workload at realistic densities (silent ratio 0.75, weight
density 0.03, seed 0) and traces/default when present, for the (schedule, lookahead, result slots)
configurations of --configs. Cycle figures come from sim/tppe.py, which the
tests hold exact against the RTL; --rtl also runs LAYER through the RTL core (build: minutes the
first time) and records simulated cycles per second. Writes bench/results/rtl.json.
"""

from __future__ import annotations

import argparse
import dataclasses
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


# (schedule, lookahead, result slots): the paper's scan without slots, then ours one step at a time.
DEFAULT_CONFIGS = ["lockstep:1:1:0", "lockstep:4:1:0", "lockstep:4:4:0", "lockstep:4:4", "dynamic:4:1",
                   "dynamic:4:2", "dynamic:4:4:0", "dynamic:4:4", "dynamic:4:8"]


def _synthetic():
    from sim.synthetic import write_random_workload

    d = Path(tempfile.mkdtemp(prefix="loas-bench-")) / "synthetic"
    write_random_workload(d, {
        "conv2": Geometry(64, 32, 32, 3, 1, 1, 64),
        "conv3": Geometry(64, 16, 16, 3, 1, 1, 128),
        "conv4": Geometry(128, 16, 16, 3, 1, 1, 128),
        "fc": Geometry.fc(2048, 10),
    }, silent_ratio=0.75, weight_density=0.03, seed=0)
    return load_workload(d)


def _workloads(name):
    if name:
        return [load_workload(name)]
    wls = [_synthetic()]
    if (TRACES_DIR / "default" / "manifest.yaml").exists():
        wls.append(load_workload("default"))
    return wls


def _layer_figures(layer, configs):
    cfg = LoASConfig()
    words, weights = layer.words(0), layer.weights_kn()
    M, K = words.shape
    N = weights.shape[1]
    C = -(-K // cfg.chunk_bits)
    matches = match_counts(words, weights)
    work_bound = int(matches.sum()) / cfg.pes
    scan_bound = M * N * C / cfg.pes  # spec section 9: one chunk pair per cycle, no skipping
    bound = max(work_bound, scan_bound)
    # A TPPE holds one fiber per F-side cycle at least: the floor of any design that runs one output
    # neuron per TPPE at a time (ours with any lookahead; not a bound of the spec).
    fiber_bound = int(np.maximum(matches, 1).sum()) / cfg.pes
    out = {"layer": layer.name, "M": M, "K": K, "N": N, "work_bound": work_bound, "scan_bound": scan_bound,
           "fiber_bound": fiber_bound}
    for sched, L, Q, pf in configs:
        c = LoASConfig(lookahead=L, schedule=sched, result_slots=Q, row_prefetch=pf)
        t0 = time.perf_counter()
        lag = core_cycles(words, weights, c)
        model_s = time.perf_counter() - t0
        fst = core_cycles(words, weights, dataclasses.replace(c, laggy_adders=c.chunk_bits))
        key = f"{sched}_L{L}_Q{Q}" + ("" if pf else "_nopf")
        out[key] = {
            "cycles_laggy": lag.total, "cycles_fast_both_sides": fst.total,
            "laggy_loss_pct": 100.0 * (lag.total - fst.total) / fst.total,
            "vs_max_bound_pct": 100.0 * (lag.total / bound - 1),
            "vs_work_bound_pct": 100.0 * (lag.total / work_bound - 1) if work_bound else None,
            "vs_fiber_bound_pct": 100.0 * (lag.total / fiber_bound - 1),
            "fast_vs_max_bound_pct": 100.0 * (fst.total / bound - 1),
            "stalls": lag.stalls, "model_s": round(model_s, 3),
        }
        f = out[key]
        print(f"{layer.name:<8} {sched:<8} L={L} Q={Q} pf={int(pf)}  laggy {lag.total:>8} fast {fst.total:>8} loss {f['laggy_loss_pct']:5.1f} %"
              f"  vs max(work, scan) {f['vs_max_bound_pct']:6.1f} %  vs fiber {f['vs_fiber_bound_pct']:6.1f} %")
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("workload", nargs="?", help="default: the synthetic workload and traces/default when present")
    ap.add_argument("--rtl", help="also run this layer (of the first workload) through the RTL core")
    ap.add_argument("--simulator", default="verilator")
    ap.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS,
                    help="SCHEDULE:LOOKAHEAD:RESULT_SLOTS[:ROW_PREFETCH] to model (prefetch 1 = on, the default)")
    ap.add_argument("--rtl-lookahead", type=int, default=4, help="lookahead of the --rtl build")
    ap.add_argument("--rtl-schedule", default="lockstep", help="lane schedule of the --rtl build")
    args = ap.parse_args()
    wls = _workloads(args.workload)
    configs = []
    for c in args.configs:
        try:
            sched, L, Q, *pf = c.split(":")
            if len(pf) > 1 or pf not in ([], ["0"], ["1"]):
                raise ValueError
            configs.append((sched, int(L), int(Q), pf != ["0"]))
        except ValueError:
            ap.error(f"--configs: {c!r} is not SCHEDULE:LOOKAHEAD:RESULT_SLOTS[:0|1]")
    res = {"config": "loas (P=16, T=4, W=128, 16 laggy adders, FIFO 8)",
           "columns": "SCHEDULE_L<lookahead>_Q<result slots>[_nopf: without the row prefetch]", "workloads": {}}
    for wl in wls:
        print(f"== {wl.name}")
        res["workloads"][wl.name] = [_layer_figures(layer, configs) for layer in wl.layers()]
    if args.rtl:
        from hw.cosim import run_core
        from sim.params import Capacity, CoreParams

        L, sched = args.rtl_lookahead, args.rtl_schedule
        layer = wls[0].layer(args.rtl)
        words, weights = layer.words(0), layer.weights_kn()
        params = CoreParams(timesteps=layer.T, lookahead=L, schedule=sched)
        r = run_core(words, weights, layer.bias, layer.lif, layer.n_mask, params,
                     Capacity.fit(words, weights, layer.bias), simulator=args.simulator)
        model = core_cycles(words, weights, params).total
        res["rtl"] = {"workload": wls[0].name, "layer": args.rtl, "lookahead": L, "schedule": sched,
                      "simulator": args.simulator,
                      "rtl_cycles": r["rtl_cycles"], "model_cycles": model,
                      "sim_s": r["sim_wall_s"], "build_s": r["build_s"],
                      "sim_cycles_per_s": r["rtl_cycles"] / r["sim_wall_s"]}
        print(res["rtl"])
    out = ROOT / "bench" / "results" / "rtl.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
