"""cocotb testbench of the LoAS core (top ``loas_core``), driven by hw.cosim.run_core.

Loads the memories through the load port (seeded idle cycles between writes), starts the layer,
collects every output beat (seeded backpressure on ``out``), and writes words, fibers and the cycle
counter to JSON; the scoreboard against the golden model runs in the caller (hw.host.check).
"""

from __future__ import annotations

import json
import os
import random
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from hw.core import Core


@cocotb.test()
async def run_layer(dut):
    with open(os.environ["LOAS_COSIM_IN"]) as f:
        cfg = json.load(f)
    params = cfg["params"]
    core = Core(**params)
    core._MustUse__used = True  # only its output layout is needed here, not its hardware
    rng = random.Random(cfg["seed"])
    layout = core.out_layout
    lane_layout = layout["lanes"].shape.elem_shape
    fields = ("valid", "row", "n", "word", "nz", "index")
    offs = [(lane_layout[k].offset, lane_layout[k].shape.width) for k in fields]
    lane_w = lane_layout.size
    lanes_off = layout["lanes"].offset

    cocotb.start_soon(Clock(dut.clk, 2, unit="step").start())
    dut.rst.value = 1
    # Every input defined from time 0: 4-state simulators (Icarus) would otherwise carry X into
    # combinational paths of the idle design.
    for name in ("ld_sel", "ld_addr", "ld_data", "threshold", "decay_shift", "n_mask"):
        getattr(dut, name).value = 0
    dut.rows.value = cfg["rows"]
    dut.cols.value = cfg["cols"]
    dut.chunks.value = cfg["chunks"]
    dut.start.value = 0
    dut.ld_en.value = 0
    dut.out__ready.value = 1
    await RisingEdge(dut.clk)
    await RisingEdge(dut.clk)
    dut.rst.value = 0
    for sel, addr, data in cfg["image"]:
        while cfg["idle"] and rng.random() < cfg["idle"]:
            dut.ld_en.value = 0
            await RisingEdge(dut.clk)
        dut.ld_sel.value = sel
        dut.ld_addr.value = addr
        dut.ld_data.value = int(data)
        dut.ld_en.value = 1
        await RisingEdge(dut.clk)
    dut.ld_en.value = 0
    dut.threshold.value = cfg["threshold"]
    dut.decay_shift.value = cfg["decay_shift"]
    dut.n_mask.value = cfg["n_mask"]
    dut.rows.value = cfg["rows"]
    dut.cols.value = cfg["cols"]
    dut.chunks.value = cfg["chunks"]
    dut.start.value = 1
    await RisingEdge(dut.clk)
    dut.start.value = 0
    t0 = time.perf_counter()
    beats = []
    P = params["pes"]
    bp = cfg["backpressure"]
    # Sample every cycle (valid may stay high across back-to-back beats, so edges of valid cannot
    # count beats) until done. A hung design fails after a generous cycle budget instead of
    # running forever.
    budget = cfg["rows"] * cfg["cols"] * (cfg["chunks"] * params["chunk_bits"] * 4 + 64) + 10_000
    cycle = 0
    while True:
        dut.out__ready.value = 0 if bp and rng.random() < bp else 1
        await ReadOnly()
        if int(dut.out__valid.value) and int(dut.out__ready.value):
            beats.append(int(dut.out__payload.value))
        if int(dut.done.value):
            break
        await RisingEdge(dut.clk)
        cycle += 1
        assert cycle <= budget, f"no progress: {len(beats)} beats after {cycle} cycles and done never rose"
    sim_wall = time.perf_counter() - t0
    cycles = int(dut.cycles.value)
    out = []
    for v in beats:
        lanes = []
        for i in range(P):
            lv = v >> (lanes_off + i * lane_w)
            lanes.append([(lv >> o) & ((1 << w) - 1) for o, w in offs])
        out.append(lanes)
    with open(os.environ["LOAS_COSIM_OUT"], "w") as f:
        json.dump({"beats": out, "rtl_cycles": cycles, "sim_wall_s": sim_wall}, f)
