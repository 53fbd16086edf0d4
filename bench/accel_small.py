"""Simulation speed of the accelerator's native-speed testbench (hw/accel_cosim.py) on the 2-lane
test chip of tests/test_hw_accel.py (``small_chip()``, its native layers: several row groups and B
tiles each), Verilator or Icarus: simulated cycles per wall and per CPU second of the simulator,
outputs checked against the golden model and cycles against sim.memory.accel_timing.

    python bench/accel_small.py [--simulator verilator|icarus]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    from hw.accel_cosim import run_accel_layers
    from hw.host import check
    from sim.golden import run_layer
    from sim.memory import accel_timing
    from tests.test_hw_accel import T, native_layers, small_chip

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--simulator", default="verilator", choices=("verilator", "icarus"))
    args = ap.parse_args(argv)
    chip, layers = small_chip(), native_layers()
    out = run_accel_layers(layers, chip, simulator=args.simulator)
    ok = True
    for (name, w, wt, b, lif, nm), res in zip(layers, out["results"]):
        model = accel_timing(w, wt, run_layer(w, wt, b, lif, T, n_mask=nm).out_words, chip)
        ok &= check(res["collector"], w, wt, b, lif, T, nm).match and not res["errors"] and res["cycles"] == model.cycles
    cyc = sum(r["sim_cycles"] for r in out["results"])
    s, c = sum(r["sim_wall_s"] for r in out["results"]), sum(r["sim_cpu_s"] for r in out["results"])
    print(json.dumps({"simulator": args.simulator, "pass": bool(ok), "layers": len(layers), "sim_cycles": cyc,
                      "sim_s": round(s, 2), "sim_cpu_s": round(c, 2), "sim_cycles_per_s": round(cyc / s),
                      "sim_cycles_per_cpu_s": round(cyc / c), "build": out["build"]}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
