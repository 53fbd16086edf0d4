"""The accelerator (hw/accel.py) on real layers, one fixed build: the RTL in the native-speed
testbench (hw/accel_cosim.py: Verilator or Icarus, the Verilog AXI4 DRAM slave with the deterministic
timing, every layer in one simulator process) against the cycle model (sim.memory.accel_timing):
outputs read back from DRAM bit-exact against the golden model, cycles and DRAM bytes per region RTL
vs model, and the simulation speed (simulated cycles per wall and per CPU second of the simulator).

    python bench/accel.py WORKLOAD [LAYER ...] [--out bench/results/accel.json] [--model-only]
                          [--simulator verilator|icarus]

WORKLOAD: a trace directory (``traces/default``, or the VGG16 of `loas trace import-prosperity
/work/shared/data/prosperity-loas/vgg16_cifar10_loas.pkl --name vgg16-loas`); every layer runs on the
default chip (``chip_from_config`` of sim/configs/loas.yaml: P = 16, 512-bit AXI, tiles of 32 rows x
64 columns, K <= 4608). A second workload's rows are merged into ``--out`` (one entry per workload).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    from sim.atomic import write_file
    from sim.config import LoASConfig
    from sim.golden import run_layer
    from sim.memory import accel_timing
    from sim.params import chip_from_config
    from sim.trace import load_workload

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("workload")
    ap.add_argument("layers", nargs="*")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "accel.json"))
    ap.add_argument("--model-only", action="store_true", help="the cycle model only (no RTL)")
    ap.add_argument("--simulator", default="verilator", choices=("verilator", "icarus"))
    args = ap.parse_args(argv)
    chip = chip_from_config(LoASConfig())
    wl = load_workload(args.workload)
    rows, layers = [], []
    for name in args.layers or wl.layer_names:
        L = wl.layer(name)
        words, weights = L.words(0), L.weights_kn()
        gold = run_layer(words, weights, L.bias, L.lif, L.T, n_mask=L.n_mask)
        model = accel_timing(words, weights, gold.out_words, chip)
        rows.append({"layer": name, "M": int(words.shape[0]), "K": int(words.shape[1]), "N": int(weights.shape[1]),
                     "tiles": model.tiles, "model_cycles": model.cycles, "model_compute": model.compute,
                     "model_fetch": model.fetch, "model_fetch_wait": model.fetch_wait,
                     "model_bytes_read": model.bytes_read, "model_bytes_written": model.bytes_written})
        layers.append((name, words, weights, L.bias, L.lif, L.n_mask))
    run = {"simulator": None if args.model_only else args.simulator}
    if not args.model_only:
        from hw.accel_cosim import run_accel_layers
        from hw.host import check

        print(f"{wl.name}: {len(layers)} layer(s) on the accelerator ({args.simulator}) ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        out = run_accel_layers(layers, chip, simulator=args.simulator)
        wall = time.perf_counter() - t0
        for row, (name, words, weights, bias, lif, n_mask), res in zip(rows, layers, out["results"]):
            c = check(res["collector"], words, weights, bias, lif, wl.T, n_mask)
            row.update(bit_exact=c.match and not res["errors"], mismatches=(res["errors"] + c.mismatches)[:3],
                       rtl_cycles=res["cycles"], rtl_compute=res["compute"], rtl_bytes_read=res["bytes_read"],
                       rtl_bytes_written=res["bytes_written"], fetch_wait=res["fetch_wait"],
                       cycles_equal=res["cycles"] == row["model_cycles"] and res["fetch_wait"] == row["model_fetch_wait"],
                       bytes_equal=res["bytes_read"] == row["model_bytes_read"]
                       and res["bytes_written"] == row["model_bytes_written"],
                       sim_cycles=res["sim_cycles"], sim_wall_s=round(res["sim_wall_s"], 3),
                       sim_cpu_s=round(res["sim_cpu_s"], 3),
                       sim_cycles_per_s=round(res["sim_cycles"] / res["sim_wall_s"]) if res["sim_wall_s"] else None,
                       sim_cycles_per_cpu_s=round(res["sim_cycles"] / res["sim_cpu_s"]) if res["sim_cpu_s"] else None)
        cyc = sum(r["sim_cycles"] for r in rows)
        sim_s, cpu_s = sum(r["sim_wall_s"] for r in rows), sum(r["sim_cpu_s"] for r in rows)
        run.update(build_s=round(out["build_s"], 1), build=out["build"], wall_s=round(wall, 1), sim_cycles=cyc,
                   sim_s=round(sim_s, 2), sim_cpu_s=round(cpu_s, 2),
                   sim_cycles_per_s=round(cyc / sim_s) if sim_s else None,
                   sim_cycles_per_cpu_s=round(cyc / cpu_s) if cpu_s else None)
    for row in rows:
        print(json.dumps({k: v for k, v in row.items() if not k.startswith(("model_bytes", "rtl_bytes"))}), flush=True)
    print(json.dumps(run), flush=True)
    # One entry per (workload, simulator): a run of another workload keeps the others' rows.
    try:
        old = json.loads(Path(args.out).read_text())
        runs = [r for r in old.get("runs", []) if (r["workload"], r["simulator"]) != (wl.name, run["simulator"])]
    except (OSError, ValueError, KeyError):
        runs = []
    runs.append({"workload": wl.name, **run, "layers": rows})
    write_file(args.out, json.dumps({"chip": "chip_from_config(LoASConfig())", "runs": runs}, indent=1) + "\n")
    return 0 if all(r.get("bit_exact", True) and r.get("cycles_equal", True) and r.get("bytes_equal", True)
                    for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
