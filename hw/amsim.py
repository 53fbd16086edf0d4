"""The core in Amaranth's simulator (the second back end beside hw.cosim's cocotb one): the same
load image, the same per-lane sinks and :class:`hw.host.Collector`, and a checker of the stream
rules on every stream of the design (hw/README.md "Stream rules")."""

from __future__ import annotations

import random

from amaranth.lib import stream, wiring
from amaranth.sim import Simulator

from hw.core import Core
from hw.host import Collector, load_image


def streams(component, path="dut"):
    """(name, interface) of every stream port of ``component`` and of its parts (``parts``
    dicts, recursively), each stream once from its component's side."""
    out = []
    for name, member in component.signature.members.items():
        if member.is_signature and isinstance(member.signature, stream.Signature):
            ifc = getattr(component, name)
            items = [ifc] if not member.dimensions else list(ifc)
            out += [(f"{path}.{name}" + (f"[{i}]" if member.dimensions else ""), s) for i, s in enumerate(items)]
    for name, part in getattr(component, "parts", {}).items():
        if isinstance(part, wiring.Component):
            out += streams(part, f"{path}.{name}")
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
