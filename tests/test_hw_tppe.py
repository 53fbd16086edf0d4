"""The TPPE alone in Amaranth's simulator: jobs driven straight into its ``job`` stream (memories
from hw.core.CoreMemories), results against sim/golden.py's accumulation, the narrow-accumulator
overflow flag, and the stream rules on every stream inside it."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from hw.amsim import StreamChecker, load_memories, streams
from hw.core import CoreMemories
from hw.host import load_image
from hw.tppe import TPPE
from sim.fibers import spike_fibers, weight_fibers
from sim.golden import psums, timestep_bits
from sim.params import Capacity, CoreParams
from sim.synthetic import random_weights, random_words


def run_tppe(words, weights, bias, params, cap):
    """Every (m, n) job in mntk order through one TPPE; returns {(m, n): (o[T], overflow)}."""
    M, K = words.shape
    N = weights.shape[1]
    C = params.chunks(K)
    mems, tppe = CoreMemories(params, cap), TPPE(params, cap, tag_bits=16)
    top = Module()
    top.submodules.mems, top.submodules.tppe = mems, tppe
    for port in ("a_win", "b_win"):
        wiring.connect(top, getattr(tppe, port), mems.window(port[0] + "_mask"))
    for port, mem in (("al_mask", "a_mask"), ("aw_mask", "a_mask"), ("a_val", "a_val"), ("b_val", "b_val")):
        wiring.connect(top, getattr(tppe, port), mems.read_port(mem))
    fa, fb = spike_fibers(words, params.chunk_bits), weight_fibers(weights, params.chunk_bits)
    jobs = [dict(a_row=m * C, a_ptr=int(fa.ptr[m]), b_col=n * C, b_ptr=int(fb.ptr[n]), bias=int(bias[n]),
                 new_row=int(n == 0), tag=m * N + n) for m in range(M) for n in range(N)]
    checker = StreamChecker(streams(tppe, "tppe"))
    got = {}

    async def tb(ctx):
        await load_memories(ctx, mems.load, load_image(words, weights, bias, params))
        ctx.set(tppe.chunks, C)
        ctx.set(tppe.result.ready, 1)
        pending = list(jobs)
        cycle = 0
        while len(got) < len(jobs):
            if pending:
                for k, v in pending[0].items():
                    ctx.set(getattr(tppe.job.payload, k), v)
            ctx.set(tppe.job.valid, int(bool(pending)))
            checker.sample(ctx, cycle)
            if pending and ctx.get(tppe.job.ready):
                pending.pop(0)
            if ctx.get(tppe.result.valid):
                r = ctx.get(tppe.result.payload)
                got[int(r.tag)] = ([int(v) for v in r.o], int(r.overflow))
            await ctx.tick()
            cycle += 1
            assert cycle < len(jobs) * (C * params.chunk_bits * 4 + 64) + 1000, "no progress"

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    assert not checker.errors, checker.errors[:5]
    return {(t // N, t % N): v for t, v in got.items()}


def _wrap(v, bits):
    return ((int(v) + (1 << (bits - 1))) % (1 << bits)) - (1 << (bits - 1))


def _overflows(words, weights, bias, T, bits):
    """(M, N) bool: a partial sum of the pseudo-accumulator or of a correction accumulator (matches
    in position order) leaves the signed ``bits`` range -- the sticky flag's contract."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    nz = words != 0
    tb = timestep_bits(words, T, np.int64)  # (T, M, K)
    M, N = words.shape[0], weights.shape[1]
    out = np.zeros((M, N), bool)
    for m in range(M):
        for n in range(N):
            w = np.where(nz[m] & (weights[:, n] != 0), weights[:, n].astype(np.int64), 0)
            pseudo = bias[n] + np.cumsum(w)
            corr = np.cumsum(w[None, :] * (1 - tb[:, m, :]), axis=1)
            out[m, n] = (pseudo.min() < lo or pseudo.max() > hi or corr.min() < lo or corr.max() > hi
                         or not lo <= bias[n] <= hi)
    return out


@pytest.mark.parametrize("adders,depth,la,Q,prefetch", [(16, 8, 4, 4, True), (4, 2, 1, 1, False), (128, 1, 2, 2, True)])
def test_tppe_alone_exact(adders, depth, la, Q, prefetch):
    rng = np.random.default_rng(adders + depth)
    T, M, N, K = 4, 3, 5, 300
    words = random_words(rng, (M, K), T, 0.5)
    weights = random_weights(rng, (K, N), 0.2)
    bias = rng.integers(-64, 64, size=N)
    p = CoreParams(pes=1, laggy_adders=adders, fifo_depth=depth, lookahead=la, result_slots=Q, row_prefetch=prefetch)
    got = run_tppe(words, weights, bias, p, Capacity.fit(words, weights, bias, exact=True))
    gold = psums(words, weights, bias, T)
    for (m, n), (o, ovf) in got.items():
        assert o == [int(gold[t, m, n]) for t in range(T)] and not ovf


def test_tppe_narrow_accumulator_overflow_flag():
    """acc_bits narrower than the safe width: the result's ``overflow`` is set exactly for the
    neurons whose pseudo or correction sums leave the range; the others stay exact."""
    rng = np.random.default_rng(3)
    T, M, N, K, bits = 4, 2, 6, 256, 10
    words = random_words(rng, (M, K), T, 0.3)
    weights = random_weights(rng, (K, N), 0.3)
    weights[:, :3] = np.where(weights[:, :3] != 0, 120, 0)  # columns 0..2 overflow 10 bits
    weights[:, 3:] = np.clip(weights[:, 3:], -3, 3)
    bias = rng.integers(-20, 20, size=N)
    p = CoreParams(pes=1, acc_bits=bits)
    got = run_tppe(words, weights, bias, p, Capacity.fit(words, weights, bias, exact=True))
    want = _overflows(words, weights, bias, T, bits)
    assert want[:, :3].all() and not want[:, 3:].any()  # both cases present
    gold = psums(words, weights, bias, T)
    for (m, n), (o, ovf) in got.items():
        assert ovf == want[m, n], (m, n)
        if not ovf:
            assert o == [_wrap(gold[t, m, n], bits) for t in range(T)]
