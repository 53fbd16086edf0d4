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
    """Testbench AXI4 slave DRAM over a bytearray, for the accelerator's ``rd`` and ``wr`` ports
    (one call of :meth:`step` per cycle, before the clock edge).

    Deterministic timing (``rng`` None; the cycle model's, sim/memory.py ``MemParams``): AR, AW and
    W always ready (W once its AW is in); beat i of a read burst accepted in cycle a is valid from
    cycle max(a + latency + i * beat_cycles, the previous beat's transfer + 1); a write's B
    response is valid ``latency`` cycles after its last W beat. With ``rng`` every ready is dropped
    at random (probability ``stall``), and every burst's latency and every beat's gap get a random
    extra of up to ``latency`` / 4 cycles (outputs must not change; cycles can only grow)."""

    def __init__(self, mem: bytearray, mp, rng=None, stall: float = 0.25):
        self.mem, self.mp, self.rng, self.stall = mem, mp, rng, stall
        self.lb = mp.line_bytes
        self.reads = []       # [addr, beats, next beat, earliest cycle of the next beat, first cycle]
        self.writes = []      # [addr, beats, beats written]
        self.bresp = []       # cycles at which a B response becomes valid
        self.r_beats = self.w_beats = 0

    def _extra(self, scale):
        return self.rng.randint(0, max(1, self.mp.latency // 4)) * scale if self.rng else 0

    def _ready(self):
        return 0 if self.rng and self.rng.random() < self.stall else 1

    def step(self, ctx, rd, wr, cycle: int):
        mp, lb = self.mp, self.lb
        # Drive this cycle's outputs (valids from state only, never from the master's ready).
        arr, awr = self._ready(), self._ready()
        ctx.set(rd.ar.ready, arr)
        ctx.set(wr.aw.ready, awr)
        rv = bool(self.reads) and cycle >= self.reads[0][3]
        ctx.set(rd.r.valid, rv)
        if rv:
            addr, beats, i = self.reads[0][:3]
            a = addr + i * lb
            ctx.set(rd.r.payload.data, int.from_bytes(self.mem[a:a + lb], "little"))
            ctx.set(rd.r.payload.last, int(i == beats - 1))
            ctx.set(rd.r.payload.resp, 0)
        wrd = int(bool(self.writes)) & self._ready()
        ctx.set(wr.w.ready, wrd)
        bv = bool(self.bresp) and cycle >= self.bresp[0]
        ctx.set(wr.b.valid, bv)
        # Transfers.
        if rv and ctx.get(rd.r.ready):
            self.r_beats += 1
            burst = self.reads[0]
            burst[2] += 1
            if burst[2] == burst[1]:
                self.reads.pop(0)
                if self.reads:
                    nxt = self.reads[0]
                    nxt[3] = max(nxt[3], cycle + 1)
            else:
                burst[3] = max(burst[4] + burst[2] * mp.beat_cycles, cycle + 1) + self._extra(1)
        if bv and ctx.get(wr.b.ready):
            self.bresp.pop(0)
        if wrd and ctx.get(wr.w.valid):
            addr, beats, i = self.writes[0]
            p = ctx.get(wr.w.payload)
            d, strb = int(p.data), int(p.strb)
            a = addr + i * lb
            for k in range(lb):
                if strb >> k & 1:
                    self.mem[a + k] = (d >> (8 * k)) & 0xFF
            self.w_beats += 1
            self.writes[0][2] += 1
            assert bool(p.last) == (i == beats - 1), f"cycle {cycle}: WLAST wrong on beat {i} of {beats}"
            if i == beats - 1:
                self.writes.pop(0)
                self.bresp.append(cycle + mp.latency + self._extra(1))
        if arr and ctx.get(rd.ar.valid):
            p = ctx.get(rd.ar.payload)
            first = cycle + mp.latency + self._extra(1)
            self.reads.append([int(p.addr), int(p.len) + 1, 0, first, first])
            self._check_burst(int(p.addr), int(p.len) + 1, int(p.size), cycle)
        if awr and ctx.get(wr.aw.valid):
            p = ctx.get(wr.aw.payload)
            self.writes.append([int(p.addr), int(p.len) + 1, 0])
            self._check_burst(int(p.addr), int(p.len) + 1, int(p.size), cycle)

    def _check_burst(self, addr, beats, size, cycle):
        lb = self.lb
        assert 1 << size == lb, f"cycle {cycle}: burst size {1 << size} bytes, the port is {lb}"
        assert addr % lb == 0, f"cycle {cycle}: unaligned burst address {addr:#x}"
        assert addr // 4096 == (addr + beats * lb - 1) // 4096, f"cycle {cycle}: burst {addr:#x} crosses 4 KiB"
        assert addr + beats * lb <= len(self.mem), f"cycle {cycle}: burst {addr:#x} + {beats} beats past DRAM"


def run_accel_sim(words, weights, bias, lif, n_mask: int, chip, *, seed: int = 0, random_dram: bool = False,
                  check_streams: bool = True, name: str = "layer") -> dict:
    """Run one layer through ``Accelerator(chip)`` in Amaranth's simulator with a :class:`DramModel`
    (deterministic, or random latency and backpressure with ``random_dram``): the DRAM image and
    descriptor from :func:`hw.host.dram_image`, the output fibers read back from DRAM
    (``collector``), every counter of the accelerator, and the stream checker's findings."""
    from hw.accel import Accelerator
    from hw.host import dram_image, read_outputs
    from sim.memory import DESC_FIELDS

    img = dram_image(words, weights, bias, lif, n_mask, chip, name=name)
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
            await ctx.tick()
            cycle += 1
            assert cycle <= budget, f"no progress: done never rose after {cycle} cycles"
        for k in ("cycles", "compute", "fetch_wait", "write_wait", "words_loaded"):
            res[k] = ctx.get(getattr(dut, k))
        from sim.memory import FETCH_REGIONS, WRITE_REGIONS
        res["bytes_read"] = {r: ctx.get(dut.bytes_read[i]) for i, r in enumerate(FETCH_REGIONS)}
        res["bytes_written"] = {r: ctx.get(dut.bytes_written[i]) for i, r in enumerate(WRITE_REGIONS)}
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
