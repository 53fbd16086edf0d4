"""Fast unit tests of the hw/ blocks in Amaranth's own simulator (no Verilog build)."""

from __future__ import annotations

import numpy as np
import pytest
from hw.amsim import run_core_sim
from hw.host import check
from sim.config import LoASConfig
from sim.params import Capacity, CoreParams
from sim.golden import LIFParams, match_counts
from sim.synthetic import random_weights, random_words
from sim.tppe import tppe_cycles, core_cycles


def run_core_amaranth(words, weights, bias, lif, T, n_mask, **kw):
    """The layer through the Amaranth core (memories sized to the layer), every stream checked."""
    params = CoreParams(timesteps=T, **kw)
    res = run_core_sim(words, weights, bias, lif, n_mask, params, Capacity.fit(words, weights, bias, exact=True))
    assert not res["stream_errors"], res["stream_errors"][:5]
    assert res["stream_transfers"] > 0
    return res["collector"], res["rtl_cycles"], params


@pytest.mark.parametrize("P,adders,depth,K,seg_cache,N,density,la", [
    (1, 16, 8, 300, True, 4, 0.3, 1), (1, 4, 2, 256, True, 4, 0.3, 4), (3, 16, 8, 200, True, 4, 0.3, 2),
    (2, 128, 1, 130, True, 4, 0.3, 3), (1, 16, 8, 300, False, 4, 0.3, 4), (2, 8, 2, 384, False, 4, 0.3, 1),
    (1, 16, 4, 384, True, 9, 0.05, 4), (2, 4, 8, 256, True, 7, 0.08, 1),
    (2, 16, 8, 1024, True, 5, 0.02, 3), (1, 16, 2, 896, True, 6, 0.03, 4)])
def test_core_small_exact(P, adders, depth, K, seg_cache, N, density, la):
    """Bit-exact outputs and cycle-exact timing (sim/tppe.py) of the Amaranth core; ``la`` is the
    F side's lookahead (1 = one cycle per empty chunk pair, the original behaviour)."""
    rng = np.random.default_rng(P * 100 + adders + depth + N)
    T = 4
    M = 5
    words = random_words(rng, (M, K), T, 0.5)
    weights = random_weights(rng, (K, N), density)
    bias = rng.integers(-64, 64, size=N)
    lif = LIFParams(threshold=40)
    col, cycles, params = run_core_amaranth(words, weights, bias, lif, T, n_mask=1,
                                                   pes=P, laggy_adders=adders, fifo_depth=depth,
                                                   seg_cache=seg_cache, lookahead=la)
    res = check(col, words, weights, bias, lif, T, 1)
    assert res.match, res.mismatches
    cfg = LoASConfig(pes=P, chunk_bits=128, laggy_adders=adders, fifo_depth=depth)
    model = core_cycles(words, weights, cfg, seg_cache=seg_cache, lookahead=la)
    assert cycles == model.total
    if P == 1:  # one lane: the core's cycles are its jobs' occupancies and its waits for the walk unit
        assert cycles == model.tppe.sum() + model.stalls["walk_wait"]
        if adders < 128 and seg_cache:  # rows after the first are prefetched: no walk, fewer cycles
            assert model.tppe.sum() < tppe_cycles(words, weights, cfg, seg_cache=seg_cache, lookahead=la).sum()


@pytest.mark.parametrize("P,M,N,K,density,la,seed", [
    (2, 7, 5, 300, 0.2, 4, 0), (3, 11, 4, 256, 0.1, 1, 1), (4, 3, 6, 384, 0.15, 2, 2), (1, 4, 3, 200, 0.3, 4, 3),
    (3, 9, 1, 512, 0.05, 4, 4)])
def test_core_dynamic_schedule_exact(P, M, N, K, density, la, seed):
    """Schedule ``dynamic``: lanes run whole rows independently and take the next free row; outputs
    bit-exact and the cycle counter equal to sim/tppe.py's list schedule. Row densities differ
    (every other row much denser) so lanes really drift apart."""
    rng = np.random.default_rng(seed)
    T = 4
    words = random_words(rng, (M, K), T, 0.5)
    words[::2] = random_words(rng, (len(words[::2]), K), T, 0.1)
    weights = random_weights(rng, (K, N), density)
    bias = rng.integers(-64, 64, size=N)
    lif = LIFParams(threshold=40)
    col, cycles, _ = run_core_amaranth(words, weights, bias, lif, T, n_mask=seed % 2, pes=P,
                                          lookahead=la, schedule="dynamic")
    res = check(col, words, weights, bias, lif, T, seed % 2)
    assert res.match, res.mismatches
    cfg = LoASConfig(pes=P, lookahead=la)
    dyn = core_cycles(words, weights, cfg, schedule="dynamic")
    assert cycles == dyn.total
    assert dyn.busy.sum() == dyn.tppe.sum()  # every lane cycle is accounted for


@pytest.mark.parametrize("Q,schedule,la,adders,depth,seed", [
    (1, "lockstep", 4, 16, 8, 0), (2, "lockstep", 1, 16, 2, 1), (3, "dynamic", 4, 4, 8, 2),
    (2, "dynamic", 2, 16, 1, 3), (4, "lockstep", 4, 16, 8, 4), (1, "dynamic", 1, 8, 4, 5)])
def test_core_result_slots_exact(Q, schedule, la, adders, depth, seed):
    """Result slots (the F side runs up to Q jobs ahead of the corrections): many short fibers,
    about a third of them without a match (jobs whose slot needs no correction, the case where a
    later job's correction must wait for an earlier empty job's result), rows of very different
    density. Outputs bit-exact, cycles equal to sim/tppe.py."""
    rng = np.random.default_rng(seed)
    T, M, N, K = 4, 9, 7, 260
    words = random_words(rng, (M, K), T, 0.9)
    words[::3] = random_words(rng, (len(words[::3]), K), T, 0.4)
    weights = random_weights(rng, (K, N), 0.03)
    bias = rng.integers(-64, 64, size=N)
    lif = LIFParams(threshold=30)
    col, cycles, _ = run_core_amaranth(words, weights, bias, lif, T, n_mask=seed % 2, pes=3,
                                          laggy_adders=adders, fifo_depth=depth, lookahead=la,
                                          schedule=schedule, result_slots=Q)
    res = check(col, words, weights, bias, lif, T, seed % 2)
    assert res.match, res.mismatches
    cfg = LoASConfig(pes=3, laggy_adders=adders, fifo_depth=depth, lookahead=la, result_slots=Q,
                     schedule=schedule)
    assert (match_counts(words, weights) == 0).mean() > 0.2  # the case this test is about
    assert cycles == core_cycles(words, weights, cfg).total


@pytest.mark.parametrize("schedule,prefetch,P,M,N,K,adders,seed", [
    ("lockstep", True, 2, 7, 5, 384, 8, 0), ("lockstep", False, 2, 7, 5, 384, 8, 0),
    ("dynamic", True, 3, 10, 2, 512, 4, 1), ("dynamic", False, 3, 10, 2, 512, 4, 1),
    ("lockstep", True, 3, 8, 1, 640, 4, 2), ("dynamic", True, 2, 6, 6, 130, 64, 3)])
def test_core_row_prefetch_exact(schedule, prefetch, P, M, N, K, adders, seed):
    """Row prefetch: each TPPE's walk unit fills the other segment-base bank with the lane's next
    row while the current one runs. Outputs bit-exact and cycles equal to sim/tppe.py with and
    without it; short rows (N = 1, 2) make lanes wait for the walk unit (``walk_wait``)."""
    rng = np.random.default_rng(seed)
    T = 4
    words = random_words(rng, (M, K), T, 0.6)
    words[1::2] = random_words(rng, (len(words[1::2]), K), T, 0.2)
    weights = random_weights(rng, (K, N), 0.1)
    bias = rng.integers(-64, 64, size=N)
    lif = LIFParams(threshold=30)
    col, cycles, _ = run_core_amaranth(words, weights, bias, lif, T, n_mask=seed % 2, pes=P,
                                          laggy_adders=adders, schedule=schedule, row_prefetch=prefetch)
    res = check(col, words, weights, bias, lif, T, seed % 2)
    assert res.match, res.mismatches
    cfg = LoASConfig(pes=P, laggy_adders=adders, schedule=schedule, row_prefetch=prefetch)
    model = core_cycles(words, weights, cfg)
    assert cycles == model.total
    if not prefetch:
        assert model.stalls["walk_wait"] == 0
    elif N <= 2:
        assert model.stalls["walk_wait"] > 0  # the case this test is about


@pytest.mark.parametrize("schedule", ["lockstep", "dynamic"])
def test_core_row_prefetch_one_cycle_rows(schedule):
    """Rows that end in the cycle after they start (N = 1, an empty fiber, C <= lookahead): the next
    row's job must not start before its ``pf`` hand-over, or the walk unit would fill a bank with a
    row that already ran (regression: the row after it then read the wrong segment bases)."""
    rng = np.random.default_rng(11)
    T, M, N, K = 4, 9, 1, 384
    words = random_words(rng, (M, K), T, 0.5)
    words[:5] = 0  # empty fibers: one-cycle rows
    weights = random_weights(rng, (K, N), 0.3)
    bias = rng.integers(-64, 64, size=N)
    lif = LIFParams(threshold=30)
    col, cycles, _ = run_core_amaranth(words, weights, bias, lif, T, n_mask=0, pes=2, laggy_adders=16,
                                          schedule=schedule)
    res = check(col, words, weights, bias, lif, T, 0)
    assert res.match, res.mismatches
    model = core_cycles(words, weights, LoASConfig(pes=2, schedule=schedule))
    assert cycles == model.total and model.stalls["walk_wait"] > 0
