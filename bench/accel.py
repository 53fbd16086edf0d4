"""The accelerator (hw/accel.py) on real layers, one fixed build: the RTL under Verilator (cocotb,
deterministic AXI DRAM model) against the cycle model (sim.memory.accel_timing): outputs read back
from DRAM bit-exact against the golden model, cycles and DRAM bytes per region RTL vs model.

    python bench/accel.py WORKLOAD [LAYER ...] [--out bench/results/accel.json] [--model-only]

WORKLOAD: a trace directory (e.g. the VGG16 of `loas trace import-prosperity`); every layer runs on
the default chip (``chip_from_config`` of sim/configs/loas.yaml: P = 16, 512-bit AXI, tiles of 32 rows
x 64 columns, K <= 4608).
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
    args = ap.parse_args(argv)
    chip = chip_from_config(LoASConfig())
    wl = load_workload(args.workload)
    rows = []
    for name in args.layers or wl.layer_names:
        L = wl.layer(name)
        words, weights = L.words(0), L.weights_kn()
        gold = run_layer(words, weights, L.bias, L.lif, L.T, n_mask=L.n_mask)
        model = accel_timing(words, weights, gold.out_words, chip)
        row = {"layer": name, "M": int(words.shape[0]), "K": int(words.shape[1]), "N": int(weights.shape[1]),
               "tiles": model.tiles, "model_cycles": model.cycles, "model_compute": model.compute,
               "model_fetch": model.fetch, "model_bytes_read": model.bytes_read,
               "model_bytes_written": model.bytes_written}
        if not args.model_only:
            from hw.accel_cosim import run_accel
            from hw.host import check

            print(f"{name}: RTL (Verilator) ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            res = run_accel(words, weights, L.bias, L.lif, L.n_mask, chip, name=name)
            c = check(res["collector"], words, weights, L.bias, L.lif, L.T, L.n_mask)
            row.update(bit_exact=c.match, mismatches=c.mismatches[:3], rtl_cycles=res["cycles"],
                       rtl_compute=res["compute"], rtl_bytes_read=res["bytes_read"],
                       rtl_bytes_written=res["bytes_written"], fetch_wait=res["fetch_wait"],
                       cycles_equal=res["cycles"] == model.cycles,
                       bytes_equal=res["bytes_read"] == model.bytes_read and res["bytes_written"] == model.bytes_written,
                       sim_wall_s=round(res["sim_wall_s"], 1), build_s=round(res["build_s"], 1),
                       wall_s=round(time.perf_counter() - t0, 1))
        print(json.dumps({k: v for k, v in row.items() if not k.startswith(("model_bytes", "rtl_bytes"))}), flush=True)
        rows.append(row)
    write_file(args.out, json.dumps({"chip": "chip_from_config(LoASConfig())", "layers": rows}, indent=1) + "\n")
    return 0 if all(r.get("bit_exact", True) and r.get("cycles_equal", True) and r.get("bytes_equal", True)
                    for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
