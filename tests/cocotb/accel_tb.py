"""cocotb testbench of the accelerator (top ``loas_accel``), driven by hw.accel_cosim.run_accel:
writes the descriptor, starts the layer and serves its AXI4 read and write ports from a
:class:`hw.dram.DramSlave` (deterministic or random timing) until ``done``; the DRAM image after the
run and every counter go to JSON for the host-side check (hw.host.read_outputs, hw.host.check)."""

from __future__ import annotations

import json
import os
import random
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from hw.accel import csr_layout
from hw.axi import addr_layout, r_layout, w_layout
from hw.dram import DramSlave
from hw.host import pack, unpack
from sim.memory import DESC_FIELDS, FETCH_REGIONS, READ_REGIONS, WRITE_REGIONS
from sim.params import ChipParams, CoreParams, MemParams


def chip_of(spec: dict) -> ChipParams:
    return ChipParams(**{**spec, "core": CoreParams(**spec["core"]), "mem": MemParams(**spec["mem"])})


@cocotb.test()
async def run_layer(dut):
    with open(os.environ["LOAS_COSIM_IN"]) as f:
        cfg = json.load(f)
    chip = chip_of(cfg["chip"])
    mp = chip.mem
    with open(cfg["image"], "rb") as f:
        mem = bytearray(f.read())
    slave = DramSlave(mem, mp, random.Random(cfg["seed"]) if cfg["random_dram"] else None)
    a_lay, r_lay, w_lay, c_lay = addr_layout(mp.addr_bits), r_layout(mp.data_bits), w_layout(mp.data_bits), csr_layout()
    cocotb.start_soon(Clock(dut.clk, 2, unit="step").start())
    dut.rst.value = 1
    for name in ("csr__valid", "csr__payload", "start", "rd__ar__ready", "rd__r__valid", "rd__r__payload",
                 "wr__aw__ready", "wr__w__ready", "wr__b__valid", "wr__b__payload"):
        getattr(dut, name).value = 0
    await RisingEdge(dut.clk)
    await RisingEdge(dut.clk)
    dut.rst.value = 0
    for i, field in enumerate(DESC_FIELDS):
        dut.csr__payload.value = pack(c_lay, addr=i, data=cfg["desc"][field])
        dut.csr__valid.value = 1
        await RisingEdge(dut.clk)
    dut.csr__valid.value = 0
    dut.start.value = 1
    await RisingEdge(dut.clk)
    dut.start.value = 0
    t0 = time.perf_counter()
    cycle = 0
    budget = cfg["budget"]
    while True:
        o = slave.outputs(cycle)
        dut.rd__ar__ready.value = o["ar_ready"]
        dut.wr__aw__ready.value = o["aw_ready"]
        dut.wr__w__ready.value = o["w_ready"]
        dut.rd__r__valid.value = o["r_valid"]
        if o["r_valid"]:
            dut.rd__r__payload.value = pack(r_lay, data=o["r_data"], last=o["r_last"], resp=0)
        dut.wr__b__valid.value = o["b_valid"]
        await ReadOnly()
        arv, awv, wv = int(dut.rd__ar__valid.value), int(dut.wr__aw__valid.value), int(dut.wr__w__valid.value)
        ar = unpack(a_lay, int(dut.rd__ar__payload.value)) if arv else {"addr": 0, "len": 0, "size": 0}
        aw = unpack(a_lay, int(dut.wr__aw__payload.value)) if awv else {"addr": 0, "len": 0, "size": 0}
        w = unpack(w_lay, int(dut.wr__w__payload.value)) if wv else {"data": 0, "strb": 0, "last": 0}
        slave.observe(cycle, ar_valid=arv, ar_addr=ar["addr"], ar_len=ar["len"], ar_size=ar["size"],
                      r_ready=int(dut.rd__r__ready.value), aw_valid=awv, aw_addr=aw["addr"], aw_len=aw["len"],
                      aw_size=aw["size"], w_valid=wv, w_data=w["data"], w_strb=w["strb"], w_last=w["last"],
                      b_ready=int(dut.wr__b__ready.value))
        if int(dut.done.value):
            break
        await RisingEdge(dut.clk)
        cycle += 1
        assert cycle <= budget, f"no progress: done never rose after {cycle} cycles"
    sim_wall = time.perf_counter() - t0

    def array(name, n):
        v = int(getattr(dut, name).value)
        return [(v >> (32 * i)) & 0xFFFF_FFFF for i in range(n)]

    res = {k: int(getattr(dut, k).value) for k in ("cycles", "compute", "fetch_wait", "write_wait", "words_loaded")}
    res["bytes_read"] = dict(zip(FETCH_REGIONS, array("bytes_read", len(FETCH_REGIONS))))
    res["bytes_written"] = dict(zip(WRITE_REGIONS, array("bytes_written", len(WRITE_REGIONS))))
    res["buffer_writes"] = dict(zip(FETCH_REGIONS, array("buffer_writes", len(FETCH_REGIONS))))
    res["buffer_reads"] = dict(zip(READ_REGIONS, array("buffer_reads", len(READ_REGIONS))))
    res.update(sim_wall_s=sim_wall, tb_cycles=cycle, r_beats=slave.r_beats, w_beats=slave.w_beats)
    with open(cfg["image_out"], "wb") as f:
        f.write(mem)
    with open(os.environ["LOAS_COSIM_OUT"], "w") as f:
        json.dump(res, f)
