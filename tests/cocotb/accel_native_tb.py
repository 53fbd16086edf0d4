"""cocotb side of the accelerator's native-speed testbench ``loas_accel_tb`` (hw/accel_cosim.py),
driven by hw.accel_cosim.run_accel_layers.

Per layer: move the host's DRAM image and descriptor files into place, set the testbench inputs,
change ``seq`` and await ONE ``RisingEdge(finished)``: the simulator reloads the DRAM, resets the
accelerator, writes the descriptor, runs the layer against the Verilog AXI4 DRAM slave and dumps
the output region without Python. Then the latched counters and the dump's name go to the results
file as one JSON line (the host reads the outputs back and checks them).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cocotb
from cocotb.triggers import RisingEdge, Timer

from hw.accel import ARRAYS, COUNTERS

INPUTS = ("n_lines", "n_csr", "dump_lo", "dump_hi", "w_lo", "w_hi", "rnd", "stall_thresh", "extra_max", "seed",
          "budget")


def _set(dut, **values):
    for name, v in values.items():
        getattr(dut, name).value = int(v)


@cocotb.test()
async def run_layers(dut):
    cfg = json.loads(Path(os.environ["LOAS_ACCEL_IN"]).read_text())
    _set(dut, rst=1, seq=0, **{n: 0 for n in INPUTS})
    await Timer(10, unit="ns")
    dut.rst.value = 0
    await Timer(4, unit="ns")
    seq = 0
    with open(cfg["results"], "a") as out:
        for layer in cfg["layers"]:
            if Path(cfg["stop_file"]).exists():  # the caller cancelled the run
                break
            os.replace(layer["dram"], cfg["dram"])
            os.replace(layer["csr"], cfg["csr"])
            _set(dut, **{n: layer[n] for n in INPUTS})
            seq += 1
            dut.seq.value = seq
            t1, c1 = time.perf_counter(), time.process_time()
            await RisingEdge(dut.finished)
            # Wall and CPU seconds of the simulator on the layer (its DRAM reload and dump included).
            sim_s, sim_cpu = time.perf_counter() - t1, time.process_time() - c1
            os.replace(cfg["dump"], layer["dump"])
            rec = {k: int(getattr(dut, k).value) for k in (*COUNTERS, "timeout", "run_cycles", "tb_cycles",
                                                           "r_beats", "w_beats", "dram_err", "dram_err_cycle")}
            for name, regions in ARRAYS.items():
                bits = getattr(dut, name).value
                v = int(bits)
                words = [(v >> (32 * i)) & 0xFFFF_FFFF for i in range(len(bits) // 32)]
                rec[name] = words if regions is None else dict(zip(regions, words))
            rec.update(name=layer["name"], dump=layer["dump"], sim_cycles=rec["tb_cycles"], sim_wall_s=round(sim_s, 5),
                       sim_cpu_s=round(sim_cpu, 5))
            out.write(json.dumps(rec) + "\n")
            out.flush()
