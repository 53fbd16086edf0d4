"""The core in Amaranth's simulator (the second back end beside hw.cosim's cocotb one): the same
load image, the same per-lane sinks and :class:`hw.host.Collector`, and a checker of the stream
rules on every stream of the design (hw/README.md "Stream rules")."""

from __future__ import annotations

import random

import numpy as np

from amaranth.lib import stream, wiring
from amaranth.sim import Simulator

from hw.core import Core
from hw.host import Collector, load_image


def streams(component, path="dut"):
    """(name, interface) of every stream port of ``component`` and of its parts (``parts``
    dicts, recursively), each stream once from its component's side."""
    out = _signature_streams(component.signature, component, path)
    for name, part in getattr(component, "parts", {}).items():
        if isinstance(part, wiring.Component):
            out += streams(part, f"{path}.{name}")
    return out


def _signature_streams(sig, obj, path):
    """Streams among the members of ``sig`` on interface object ``obj``, through nested
    (non-stream) interfaces such as the AXI channels."""
    out = []
    for name, member in sig.members.items():
        if not member.is_signature:
            continue
        ifc = getattr(obj, name)
        items = [ifc] if not member.dimensions else list(ifc)
        for i, s in enumerate(items):
            label = f"{path}.{name}" + (f"[{i}]" if member.dimensions else "")
            if isinstance(member.signature, stream.Signature):
                out.append((label, s))
            else:
                out += _signature_streams(member.signature, s, label)
    return out


class StreamChecker:
    """Per cycle, on every stream: once ``valid`` is high without ``ready``, ``valid`` stays high
    and ``payload`` keeps its value until the transfer (no valid that falls or a payload that
    changes while the receiver stalls). Violations are collected in ``errors``."""

    def __init__(self, named):
        self.named = named
        self.pending = {}  # name -> payload of a beat that waited
        self.errors: list[str] = []
        self.transfers = 0

    def sample(self, ctx, cycle: int):
        for name, s in self.named:
            valid, ready = ctx.get(s.valid), ctx.get(s.ready)
            payload = _bits(ctx.get(s.payload))
            if name in self.pending:
                if not valid:
                    self.errors.append(f"cycle {cycle}: {name}: valid fell before the transfer")
                elif payload != self.pending[name]:
                    self.errors.append(f"cycle {cycle}: {name}: payload changed while waiting for ready")
                del self.pending[name]
            if valid and not ready:
                self.pending[name] = payload
            self.transfers += bool(valid and ready)


def _bits(v) -> int:
    from amaranth.hdl import Const

    try:
        return int(v)
    except TypeError:
        return Const.cast(v).value  # a data.Const of a struct/array layout


async def load_memories(ctx, load, image, rng=None, idle: float = 0.0):
    """Source of the ``load`` stream: the image's (sel, addr, data) words, one per cycle, with
    idle cycles (valid low) at random when ``idle`` > 0."""
    for sel, addr, val in image:
        while idle and rng.random() < idle:
            ctx.set(load.valid, 0)
            await ctx.tick()
        ctx.set(load.payload.sel, sel)
        ctx.set(load.payload.addr, addr)
        ctx.set(load.payload.data, val)
        ctx.set(load.valid, 1)
        await ctx.tick()
    ctx.set(load.valid, 0)


def run_core_sim(words, weights, bias, lif, n_mask: int, params, cap, *, seed: int = 0,
                 idle: float = 0.0, backpressure: float = 0.0, check_streams: bool = True) -> dict:
    """Run one layer through ``Core(params, cap)`` in Amaranth's simulator; like
    :func:`hw.cosim.run_core`: ``rtl_cycles`` and ``collector`` (plus ``stream_errors`` and
    ``stream_transfers`` from the :class:`StreamChecker` when ``check_streams``). ``idle`` drops
    the load stream's valid and ``backpressure`` each lane's ready at random (seeded). The
    watchdog is sized from the layer (as the cocotb testbench's)."""
    dut = Core(params, cap)
    image = load_image(words, weights, bias, params)
    M, K = words.shape
    N = weights.shape[1]
    C = params.chunks(K)
    col = Collector(M, N, params.pes)
    checker = StreamChecker(streams(dut)) if check_streams else None
    rng = random.Random(seed)
    res = {}
    budget = M * N * (C * params.chunk_bits * 4 + 64) + 10_000

    async def tb(ctx):
        await load_memories(ctx, dut.load, image, rng, idle)
        for port, v in ((dut.threshold, lif.threshold), (dut.decay_shift, lif.decay_shift), (dut.n_mask, n_mask),
                        (dut.rows, M), (dut.cols, N), (dut.chunks, C), (dut.start, 1)):
            ctx.set(port, v)
        await ctx.tick()
        ctx.set(dut.start, 0)
        cycle = 0
        while not ctx.get(dut.done):
            for o in dut.out:
                ctx.set(o.ready, 0 if backpressure and rng.random() < backpressure else 1)
            if checker:
                checker.sample(ctx, cycle)
            for i, o in enumerate(dut.out):
                if ctx.get(o.valid) and ctx.get(o.ready):
                    p = ctx.get(o.payload)
                    col.beat(i, int(p.row), int(p.n), int(p.word), int(p.nz), int(p.index))
            await ctx.tick()
            cycle += 1
            assert cycle <= budget, f"no progress: done never rose after {cycle} cycles"
        res["rtl_cycles"] = ctx.get(dut.cycles)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    res["collector"] = col
    if checker:
        res["stream_errors"], res["stream_transfers"] = checker.errors, checker.transfers
    return res


class DramModel:
    """:class:`hw.dram.DramSlave` on the accelerator's ``rd`` / ``wr`` ports in Amaranth's
    simulator (one :meth:`step` per cycle, before the clock edge)."""

    def __init__(self, mem: bytearray, mp, rng=None, stall: float = 0.25):
        from hw.dram import DramSlave

        self.slave = DramSlave(mem, mp, rng, stall)

    def __getattr__(self, name):
        return getattr(self.slave, name)

    def step(self, ctx, rd, wr, cycle: int):
        o = self.slave.outputs(cycle)
        ctx.set(rd.ar.ready, o["ar_ready"])
        ctx.set(wr.aw.ready, o["aw_ready"])
        ctx.set(wr.w.ready, o["w_ready"])
        ctx.set(rd.r.valid, o["r_valid"])
        ctx.set(rd.r.payload.data, o["r_data"])
        ctx.set(rd.r.payload.last, o["r_last"])
        ctx.set(wr.b.valid, o["b_valid"])
        ar, aw, w = ctx.get(rd.ar.payload), ctx.get(wr.aw.payload), ctx.get(wr.w.payload)
        self.slave.observe(cycle, ar_valid=ctx.get(rd.ar.valid), ar_addr=int(ar.addr), ar_len=int(ar.len),
                           ar_size=int(ar.size), r_ready=ctx.get(rd.r.ready), aw_valid=ctx.get(wr.aw.valid),
                           aw_addr=int(aw.addr), aw_len=int(aw.len), aw_size=int(aw.size),
                           w_valid=ctx.get(wr.w.valid), w_data=int(w.data), w_strb=int(w.strb), w_last=int(w.last),
                           b_ready=ctx.get(wr.b.ready))


def run_accel_sim(words, weights, bias, lif, n_mask: int, chip, *, seed: int = 0, random_dram: bool = False,
                  check_streams: bool = True, name: str = "layer", probe=None, loop_order: str = "mntk") -> dict:
    """Run one layer through ``Accelerator(chip)`` in Amaranth's simulator with a :class:`DramModel`
    (deterministic, or random latency and backpressure with ``random_dram``): the DRAM image and
    descriptor from :func:`hw.host.dram_image` (tiles in ``loop_order``), the output fibers read back from DRAM
    (``collector``), every counter of the accelerator, and the stream checker's findings.
    ``probe(ctx, dut, cycle)``, when given, is called in every cycle from start to done (tests
    that watch internal signals)."""
    from hw.accel import ARRAYS, COUNTERS, Accelerator
    from hw.host import dram_image, read_outputs
    from sim.memory import DESC_FIELDS

    img = dram_image(words, weights, bias, lif, n_mask, chip, name=name, loop_order=loop_order)
    dut = Accelerator(chip)
    dram = DramModel(img.mem, chip.mem, random.Random(seed) if random_dram else None)
    checker = StreamChecker(streams(dut)) if check_streams else None
    M, K = np.shape(words)
    N = np.shape(weights)[1]
    budget = 50 * (M * N * (chip.core.chunks(K) * 64 + 64) + len(img.mem)) + 10_000
    res = {}

    async def tb(ctx):
        for i, f in enumerate(DESC_FIELDS):
            ctx.set(dut.csr.payload.addr, i)
            ctx.set(dut.csr.payload.data, img.desc[f])
            ctx.set(dut.csr.valid, 1)
            await ctx.tick()
        ctx.set(dut.csr.valid, 0)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        cycle = 0
        while not ctx.get(dut.done):
            dram.step(ctx, dut.rd, dut.wr, cycle)
            if checker:
                checker.sample(ctx, cycle)
            if probe:
                probe(ctx, dut, cycle)
            await ctx.tick()
            cycle += 1
            assert cycle <= budget, f"no progress: done never rose after {cycle} cycles"
        for k in COUNTERS:
            res[k] = ctx.get(getattr(dut, k))
        for k, regions in ARRAYS.items():
            words = [ctx.get(getattr(dut, k)[i]) for i in range(chip.core.pes if regions is None else len(regions))]
            res[k] = words if regions is None else dict(zip(regions, words))
        res["tb_cycles"] = cycle

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    res["collector"] = read_outputs(img, chip)
    res["image"], res["dram"] = img, dram
    if checker:
        res["stream_errors"], res["stream_transfers"] = checker.errors, checker.transfers
    return res
