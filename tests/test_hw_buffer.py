"""The global buffer (hw/buffer.py) in Amaranth's simulator against its cycle model (sim/buffer.py)
and a numpy reference memory: random request traces (random lines, all in one bank, each requester
in its own bank, every requester on the same lines, random valid gaps, writes interleaved); grant
and response cycles, read data and counters equal exactly. The model alone against closed forms."""

from __future__ import annotations

import random

import numpy as np
import pytest

from amaranth.sim import Simulator

from hw.amsim import StreamChecker, streams
from hw.buffer import GlobalBuffer
from sim.buffer import buffer_timing
from sim.params import BufferParams, ChipParams, CoreParams

SMALL = BufferParams(banks=4, line_bits=32, lines_per_bank=8, requesters=3, tag_bits=4)


def run_buffer_sim(bp, reads, tags, writes, wdata, wen):
    """Drive ``GlobalBuffer(bp)`` with the request streams (each request valid from
    max(earliest, previous grant + 1), held until granted) and record per requester the grant
    cycles and the responses (cycle, tag, data), the write grants, the counters, and the stream
    checker's findings; then pulse ``clear`` and read the counters again."""
    dut = GlobalBuffer(bp)
    R = bp.requesters
    ports = list(dut.req) + [dut.wr]
    streams_ = [tuple(np.asarray(x, dtype=np.int64) for x in s) for s in reads] + \
        [tuple(np.asarray(x, dtype=np.int64) for x in writes)]
    checker = StreamChecker(streams(dut))
    out = {"grant": [[] for _ in range(R + 1)], "resp": [[] for _ in range(R)]}
    budget = 20 * sum(len(a) for _, a in streams_) + 100

    async def tb(ctx):
        k, last = [0] * (R + 1), [-1] * (R + 1)
        cycle = 0
        while any(k[i] < len(streams_[i][0]) for i in range(R + 1)) or cycle <= max(last) + 1:
            for i, (e, a) in enumerate(streams_):
                on = k[i] < len(e) and max(int(e[k[i]]), last[i] + 1) <= cycle
                ctx.set(ports[i].valid, on)
                if on:
                    ctx.set(ports[i].payload.addr, int(a[k[i]]))
                    if i < R:
                        ctx.set(ports[i].payload.tag, tags[i][k[i]])
                    else:
                        ctx.set(ports[i].payload.data, wdata[k[i]])
                        ctx.set(ports[i].payload.en, wen[k[i]])
            checker.sample(ctx, cycle)
            for r in range(R):
                if ctx.get(dut.resp[r].valid):
                    p = ctx.get(dut.resp[r].payload)
                    out["resp"][r].append((cycle, int(p.tag), int(p.data)))
            for i in range(R + 1):
                if ctx.get(ports[i].valid) and ctx.get(ports[i].ready):
                    out["grant"][i].append(cycle)
                    last[i] = cycle
                    k[i] += 1
            await ctx.tick()
            cycle += 1
            assert cycle <= budget, "no progress"
        for i in range(R + 1):
            ctx.set(ports[i].valid, 0)
        out["counters"] = _counters(ctx, dut)
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        out["cleared"] = _counters(ctx, dut)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    out["stream_errors"] = checker.errors
    return out


def _counters(ctx, dut):
    return {"bank_reads": ctx.get(dut.bank_reads), "merged_reads": ctx.get(dut.merged_reads),
            "writes": ctx.get(dut.writes), "read_stalls": [ctx.get(dut.read_stalls[r]) for r in range(len(dut.req))],
            "write_stalls": ctx.get(dut.write_stalls)}


def reference_reads(bp, reads, writes, wdata, wen, timing):
    """Per requester the data each read returns: a numpy memory of bp.lines lines (zero at reset)
    with the writes applied at their grant cycles; a read sees the writes granted before it."""
    mem = [0] * bp.lines  # Python ints: lines may be wider than 64 bits
    events = [(int(g), 1, ("w", j)) for j, g in enumerate(timing.write_grant)]
    events += [(int(g), 0, ("r", r, j)) for r, gs in enumerate(timing.read_grant) for j, g in enumerate(gs)]
    got = [[None] * len(gs) for gs in timing.read_grant]
    waddr = np.asarray(writes[1], dtype=np.int64)
    for _, _, ev in sorted(events):
        if ev[0] == "r":
            _, r, j = ev
            got[r][j] = mem[int(reads[r][1][j])]
        else:
            j = ev[1]
            mask = sum(0xFF << (8 * i) for i in range(bp.line_bits // 8) if wen[j] >> i & 1)
            a = int(waddr[j])
            mem[a] = (mem[a] & ~mask) | (wdata[j] & mask)
    return got


def trace(bp, kind, n, seed, n_writes=None):
    """Request streams of one kind: ``random`` lines, ``same_bank`` (every request in bank 0),
    ``own_bank`` (requester r in bank r mod banks, writes in the last bank), ``broadcast`` (every
    requester the same lines at the same earliest cycles); random valid gaps (mostly 0)."""
    rng = np.random.default_rng(seed)
    R = bp.requesters
    n_writes = n if n_writes is None else n_writes

    def gaps(m):
        return np.cumsum(np.where(rng.random(m) < 0.6, 0, rng.integers(1, 6, m)))

    def lines_in(bank, m):
        rows = rng.integers(0, bp.lines_per_bank, m)
        return rows * bp.banks + bank if bp.interleave == "line" else bank * bp.lines_per_bank + rows

    hot = rng.integers(0, bp.lines, 4)  # a few hot lines: conflicts and merges also in `random`
    reads = []
    shared = (gaps(n), rng.integers(0, bp.lines, n))
    for r in range(R):
        if kind == "random":
            a = np.where(rng.random(n) < 0.3, rng.choice(hot, n), rng.integers(0, bp.lines, n))
        elif kind == "same_bank":
            a = lines_in(0, n)
        elif kind == "own_bank":
            a = lines_in(r % bp.banks, n)
        else:
            reads.append(shared)
            continue
        reads.append((gaps(n), a))
    wa = lines_in(bp.banks - 1, n_writes) if kind == "own_bank" else \
        np.where(rng.random(n_writes) < 0.3, rng.choice(hot, n_writes), rng.integers(0, bp.lines, n_writes))
    writes = (gaps(n_writes), wa)
    return reads, writes


def check_against_model(bp, reads, writes, seed=0):
    rnd = random.Random(seed)
    R = bp.requesters
    tags = [[rnd.getrandbits(bp.tag_bits) for _ in range(len(a))] for _, a in reads]
    nb = bp.line_bits // 8
    wdata = [rnd.getrandbits(bp.line_bits) for _ in range(len(writes[1]))]
    wen = [(1 << nb) - 1 if rnd.random() < 0.5 else rnd.getrandbits(nb) for _ in range(len(writes[1]))]
    model = buffer_timing(bp, reads, writes)
    rtl = run_buffer_sim(bp, reads, tags, writes, wdata, wen)
    assert not rtl["stream_errors"], rtl["stream_errors"][:5]
    for r in range(R):
        assert rtl["grant"][r] == model.read_grant[r].tolist(), f"requester {r}: grant cycles"
    assert rtl["grant"][R] == model.write_grant.tolist(), "write grant cycles"
    want = reference_reads(bp, reads, writes, wdata, wen, model)
    for r in range(R):
        assert [c for c, _, _ in rtl["resp"][r]] == (model.read_grant[r] + 1).tolist(), f"requester {r}: responses"
        assert [t for _, t, _ in rtl["resp"][r]] == tags[r], f"requester {r}: tags"
        assert [d for _, _, d in rtl["resp"][r]] == want[r], f"requester {r}: read data"
    assert rtl["counters"] == model.counters()
    assert rtl["cleared"] == {"bank_reads": 0, "merged_reads": 0, "writes": 0, "read_stalls": [0] * R,
                              "write_stalls": 0}
    return model, rtl


@pytest.mark.parametrize("kind", ["random", "same_bank", "own_bank", "broadcast"])
def test_buffer_exact(kind):
    """Grant and response cycles, tags, read data and counters equal the model's and the
    reference memory's, on 4 banks x 3 requesters + writes."""
    reads, writes = trace(SMALL, kind, 40, seed=len(kind))
    model, _ = check_against_model(SMALL, reads, writes, seed=1)
    if kind == "same_bank":
        assert model.read_stalls.min() > 0 and model.merged_reads < model.bank_reads
    if kind == "broadcast":
        assert model.merged_reads > model.bank_reads  # mostly one bank read for all 3
    if kind == "own_bank":  # no two contenders ever share a bank
        assert model.read_stalls.sum() == 0 and model.write_stalls == 0


@pytest.mark.parametrize("bp", [
    BufferParams(banks=16, line_bits=64, lines_per_bank=4, requesters=5, tag_bits=3),
    BufferParams(banks=4, line_bits=16, lines_per_bank=4, requesters=2, tag_bits=2, interleave="block"),
    BufferParams(banks=1, line_bits=8, lines_per_bank=2, requesters=1, tag_bits=1),
    BufferParams(banks=2, line_bits=128, lines_per_bank=1, requesters=4, tag_bits=5),
], ids=["16banks", "block", "one_bank", "one_line_per_bank"])
def test_buffer_exact_shapes(bp):
    reads, writes = trace(bp, "random", 25, seed=bp.banks)
    check_against_model(bp, reads, writes, seed=2)


@pytest.mark.parametrize("interleave", ["line", "block"])
def test_tile_larger_than_a_bank(interleave):
    """A tile of 3.5 banks' worth of lines written in fetch order (one line per cycle) while three
    readers sweep it: two from its first line together (the broadcast: merged reads), one from its
    middle. Every bank holds part of the tile; data, cycles and counters are exact."""
    bp = SMALL.replace(interleave=interleave)
    base, length = 3, 3 * bp.lines_per_bank + bp.lines_per_bank // 2
    tile = base + np.arange(length)
    assert set(bp.bank_of(tile).tolist()) == set(range(bp.banks))
    writes = (np.zeros(length, dtype=np.int64), tile)
    start = np.full(length, length // 2)
    reads = [(start, tile), (start, tile), (start, np.roll(tile, -length // 2))]
    model, _ = check_against_model(bp, reads, writes, seed=3)
    assert model.merged_reads > 0
    if interleave == "line":  # sweeps in line order meet each bank once every `banks` lines
        assert (model.write_grant[:length // 2] == np.arange(length // 2)).all()
        assert model.read_stalls.sum() == 0  # (block: the sweeps queue on the same bank)
    else:
        assert model.read_stalls.sum() > 0


# ---------------------------------------------------------------------------------------------
# The model alone

def test_model_same_bank_round_robin():
    """R readers, all on distinct lines of one bank, all valid from cycle 0: round-robin grants
    requester r's k-th read in cycle k * R + r; each waits r cycles first, then R - 1 per read."""
    bp = BufferParams(banks=4, line_bits=32, lines_per_bank=256, requesters=5)
    n, R = 30, bp.requesters
    reads = [(np.zeros(n), (np.arange(n) * R + r) * bp.banks) for r in range(R)]
    t = buffer_timing(bp, reads)
    for r in range(R):
        assert (t.read_grant[r] == np.arange(n) * R + r).all()
        assert t.read_stalls[r] == r + (n - 1) * (R - 1)
    assert t.bank_reads == n * R and t.merged_reads == 0 and t.cycles == n * R


def test_model_write_not_starved():
    """A write contending with R readers on one bank waits at most R grants (round-robin)."""
    bp = BufferParams(banks=2, line_bits=32, lines_per_bank=64, requesters=3)
    n = 20
    reads = [(np.zeros(n), (np.arange(n) * 3 + r) * 2) for r in range(3)]
    t = buffer_timing(bp, reads, (np.zeros(n), np.arange(n) * 2 + 64))
    assert (np.diff(t.write_grant) == 4).all() and t.write_grant[0] == 3
    assert t.write_stalls == 3 + (n - 1) * 3


def test_model_broadcast_and_own_banks():
    bp = BufferParams(banks=8, line_bits=32, lines_per_bank=16, requesters=6)
    n = 50
    rng = np.random.default_rng(0)
    e = np.cumsum(rng.integers(0, 3, n))
    lines = rng.integers(0, bp.lines, n)
    t = buffer_timing(bp, [(e, lines)] * bp.requesters)
    assert t.bank_reads == n and t.merged_reads == n * (bp.requesters - 1)
    assert t.read_stalls.sum() == 0 and all((g == t.read_grant[0]).all() for g in t.read_grant)
    own = [(e, rng.integers(0, bp.lines_per_bank, n) * bp.banks + r) for r in range(bp.requesters)]
    t = buffer_timing(bp, own)
    assert t.read_stalls.sum() == 0 and t.merged_reads == 0
    for r in range(bp.requesters):  # never stalled: each read granted where its stream makes it valid
        assert (t.read_grant[r] == t.read_valid[r]).all()


def test_params():
    paper = BufferParams.from_chip(ChipParams())
    assert (paper.banks, paper.line_bits, paper.lines_per_bank, paper.requesters) == (16, 512, 256, 17)
    assert paper.kib == 256
    assert BufferParams.from_chip(ChipParams(core=CoreParams(pes=4)), line_bits=256).lines_per_bank == 512
    with pytest.raises(ValueError, match="^buffer_kib: "):
        BufferParams.from_chip(ChipParams(buffer_kib=255))
    for kw, field in [({"banks": 3}, "banks"), ({"line_bits": 4}, "line_bits"), ({"requesters": 0}, "requesters"),
                      ({"interleave": "xor"}, "interleave"), ({"lines_per_bank": 6}, "lines_per_bank")]:
        with pytest.raises(ValueError, match=f"^{field}: "):
            BufferParams(**kw)
    with pytest.raises(ValueError, match="requesters"):
        buffer_timing(SMALL, [((), ())])
    with pytest.raises(ValueError, match="outside"):
        buffer_timing(SMALL, [((0,), (SMALL.lines,)), ((), ()), ((), ())])
    with pytest.raises(TypeError, match="^bp: "):
        GlobalBuffer(ChipParams())


def test_read_write_same_bank_directed():
    """Reader 0 asks for line 5 twice from cycle 0, the write port writes line 5 from cycle 0
    (same bank): round-robin gives the bank to the read (cycle 0, old data), the write (cycle 1:
    the pointer is past reader 0) and the read again (cycle 2, the new line)."""
    bp = SMALL
    reads = [((0, 0), (5, 5)), ((), ()), ((), ())]
    writes = ((0,), (5,))
    new = 0xDEADBEEF
    rtl = run_buffer_sim(bp, reads, [[1, 2], [], []], writes, [new], [0b1111])
    assert rtl["grant"][0] == [0, 2] and rtl["grant"][bp.requesters] == [1]
    assert rtl["resp"][0] == [(1, 1, 0), (3, 2, new)]
    assert rtl["counters"]["read_stalls"] == [1, 0, 0] and rtl["counters"]["write_stalls"] == 1
    model = buffer_timing(bp, reads, writes)
    assert model.read_grant[0].tolist() == [0, 2] and model.write_grant.tolist() == [1]


def test_paper_buffer_exact():
    """The synthesized configuration (the default chip's: 16 banks x 256 x 512 bits, 17
    requesters) on a short random trace."""
    bp = BufferParams.from_chip(ChipParams())
    reads, writes = trace(bp, "random", 12, seed=7)
    model, _ = check_against_model(bp, reads, writes, seed=4)
    assert model.read_stalls.sum() > 0 and model.merged_reads > 0
