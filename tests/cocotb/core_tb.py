"""cocotb testbench of the LoAS core (top ``loas_core``), driven by hw.cosim.run_core.

:class:`CoreTB` has a load source (the ``load`` stream) and one output sink per lane (``out[i]``),
both taking pause generators (idle cycles on the source, backpressure on the sinks, seeded, as
cocotbext-axi's ``set_pause_generator``). The scoreboard runs here: every beat is compared with the
golden model's word and packed output fiber as it arrives (a wrong word fails the test), and at the
end every output must have come exactly once (queue empty). Beats and the cycle counter go to JSON
for the host-side check (hw.host.check).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from hw.core import lane_layout, load_layout
from hw.host import pack, unpack
from sim.params import Capacity, CoreParams


def random_pause(rng: random.Random, p: float):
    """Pause generator: True (pause this cycle) with probability p."""
    while True:
        yield bool(p) and rng.random() < p


class CoreTB:
    def __init__(self, dut, params: CoreParams, cap: Capacity, golden: dict):
        self.dut, self.P = dut, params.pes
        self.load_lay, self.lane_lay = load_layout(params), lane_layout(params, cap)
        self.golden = golden
        self.expected = {(r, n) for r in range(len(golden["words"])) for n in range(len(golden["words"][0]))}
        self.beats = []
        self.load_pause = itertools.repeat(False)
        self.out_pause = [itertools.repeat(False) for _ in range(self.P)]

    def port(self, i, member):
        return getattr(self.dut, f"out__{i}__{member}")

    async def reset(self, shape):
        dut = self.dut
        cocotb.start_soon(Clock(dut.clk, 2, unit="step").start())
        dut.rst.value = 1
        # Every input defined from time 0: 4-state simulators (Icarus) would otherwise carry X into
        # combinational paths of the idle design.
        for name in ("load__payload", "load__valid", "threshold", "decay_shift", "n_mask", "start"):
            getattr(dut, name).value = 0
        for name, v in shape.items():
            getattr(dut, name).value = v
        for i in range(self.P):
            self.port(i, "ready").value = 1
        await RisingEdge(dut.clk)
        await RisingEdge(dut.clk)
        dut.rst.value = 0

    async def load(self, image):
        """Source: one word per transfer; a pause cycle drops valid (``load.ready`` is always high)."""
        dut = self.dut
        for sel, addr, word in image:
            while next(self.load_pause):
                dut.load__valid.value = 0
                await RisingEdge(dut.clk)
            dut.load__payload.value = pack(self.load_lay, sel=sel, addr=addr, data=int(word))
            dut.load__valid.value = 1
            await RisingEdge(dut.clk)
        dut.load__valid.value = 0

    def score(self, lane, beat):
        r, n = beat["row"], beat["n"]
        assert (r, n) in self.expected, f"lane {lane}: output ({r}, {n}) not expected (outside the layer or twice)"
        self.expected.discard((r, n))
        want = self.golden["words"][r][n]
        assert beat["word"] == want, f"lane {lane}: word ({r}, {n}) = {beat['word']:#x}, golden {want:#x}"
        if beat["nz"]:
            packed = self.golden["packed"][r]
            assert beat["index"] < len(packed) and packed[beat["index"]] == beat["word"], \
                f"lane {lane}: ({r}, {n}) at packed index {beat['index']} of row {r}, golden fiber {packed}"

    async def run(self, budget: int) -> int:
        """Start the layer; sinks take beats (every cycle, not on edges of valid: valid may stay high
        across back-to-back beats) until ``done``. Returns the cycles waited."""
        dut = self.dut
        dut.start.value = 1
        await RisingEdge(dut.clk)
        dut.start.value = 0
        cycle = 0
        while True:
            for i in range(self.P):
                self.port(i, "ready").value = 0 if next(self.out_pause[i]) else 1
            await ReadOnly()
            for i in range(self.P):
                if int(self.port(i, "valid").value) and int(self.port(i, "ready").value):
                    beat = unpack(self.lane_lay, int(self.port(i, "payload").value))
                    self.score(i, beat)
                    self.beats.append([i, [beat[k] for k in ("row", "n", "word", "nz", "index")]])
            if int(dut.done.value):
                return cycle
            await RisingEdge(dut.clk)
            cycle += 1
            assert cycle <= budget, f"no progress: {len(self.beats)} beats after {cycle} cycles and done never rose"


@cocotb.test()
async def run_layer(dut):
    with open(os.environ["LOAS_COSIM_IN"]) as f:
        cfg = json.load(f)
    params, cap = CoreParams(**cfg["params"]), Capacity(**cfg["cap"])
    tb = CoreTB(dut, params, cap, cfg["golden"])
    rng = random.Random(cfg["seed"])
    tb.load_pause = random_pause(rng, cfg["idle"])
    tb.out_pause = [random_pause(rng, cfg["backpressure"]) for _ in range(params.pes)]
    shape = {"rows": cfg["rows"], "cols": cfg["cols"], "chunks": cfg["chunks"]}
    await tb.reset(shape)
    await tb.load(cfg["image"])
    dut.threshold.value = cfg["threshold"]
    dut.decay_shift.value = cfg["decay_shift"]
    dut.n_mask.value = cfg["n_mask"]
    t0 = time.perf_counter()
    # A hung design fails after a budget from the layer (each job at most C*W matches, plus slack).
    budget = cfg["rows"] * cfg["cols"] * (cfg["chunks"] * params.chunk_bits * 4 + 64) + 10_000
    await tb.run(budget)
    sim_wall = time.perf_counter() - t0
    assert not tb.expected, f"{len(tb.expected)} outputs never came, e.g. {sorted(tb.expected)[:5]}"
    with open(os.environ["LOAS_COSIM_OUT"], "w") as f:
        json.dump({"beats": tb.beats, "rtl_cycles": int(dut.cycles.value), "sim_wall_s": sim_wall}, f)
