"""cocotb cosimulation of the core (Verilator by default, Icarus when installed) against the golden
model and the timing model. Small builds (P = 2..4, memories sized to the layer) keep the suite fast;
each design is built once per parameter set under build/rtl and reused."""

from __future__ import annotations

import numpy as np
import pytest

from hw.cosim import run_core, simulator_available
from hw.host import check
from sim.config import LoASConfig
from sim.params import Capacity, CoreParams
from sim.golden import LIFParams
from sim.synthetic import random_layer
from sim.trace import Geometry, im2col
from sim.tppe import core_cycles

pytestmark = pytest.mark.rtl

SIMS = [
    "verilator",
    pytest.param("icarus", marks=pytest.mark.skipif(not simulator_available("icarus"),
                                                    reason="Icarus Verilog (iverilog) not installed")),
]


def _layer(seed, g, silent=0.75, density=0.04, n_mask=1):
    rng = np.random.default_rng(seed)
    kw = random_layer(rng, g, 4, silent_ratio=silent, weight_density=density, n_mask=n_mask)
    words = im2col(kw["spike_words"][0], g)
    weights = np.ascontiguousarray(kw["weight"].reshape(g.N, g.K).T)
    return words, weights, kw["bias"], kw["lif"], n_mask


def _run(words, weights, bias, lif, n_mask, *, simulator, pes, idle=0.0, backpressure=0.0, seed=0,
         schedule="lockstep"):
    params = CoreParams(pes=pes, timesteps=4, schedule=schedule)
    # Fixed capacities per test so all cases of a test share one build.
    cap = Capacity.fit(words, weights, bias, exact=True).replace(rows=64, cols=16, k=288, a_nnz=64 * 288,
                                                                 b_nnz=288 * 16)
    res = run_core(words, weights, bias, lif, n_mask, params, cap, simulator=simulator, seed=seed,
                   idle=idle, backpressure=backpressure)
    return res, res["collector"]


@pytest.mark.parametrize("schedule", ["lockstep", "dynamic"])
@pytest.mark.parametrize("simulator", SIMS)
def test_core_layer_trace(simulator, schedule):
    """A realistic conv layer (im2col of a spike trace): every word and fiber, and cycles exact.
    Icarus evaluates combinational memory reads far slower, so it gets a smaller layer."""
    if simulator == "verilator":
        g = Geometry(c_in=32, h=8, w=8, kernel=3, stride=1, padding=1, c_out=16)  # M=64, K=288, N=16
    else:
        g = Geometry(c_in=16, h=4, w=4, kernel=3, stride=1, padding=1, c_out=6)  # M=16, K=144, N=6
    words, weights, bias, lif, n_mask = _layer(7, g)
    res, col = _run(words, weights, bias, lif, n_mask, simulator=simulator, pes=4, schedule=schedule)
    chk = check(col, words, weights, bias, lif, 4, n_mask)
    assert chk.match, chk.mismatches
    model = core_cycles(words, weights, LoASConfig(pes=4, schedule=schedule))
    assert res["rtl_cycles"] == model.total


@pytest.mark.parametrize("seed", [1, 2])
def test_core_idle_and_backpressure(seed):
    """Seeded idle cycles on the load stream and backpressure on the output stream: outputs must
    still be exact and complete (the cycle count then includes the sink's stalls)."""
    g = Geometry(c_in=16, h=6, w=6, kernel=3, stride=2, padding=1, c_out=12)
    words, weights, bias, lif, n_mask = _layer(seed, g, silent=0.6, density=0.1, n_mask=seed % 2)
    res, col = _run(words, weights, bias, lif, n_mask, simulator="verilator", pes=4, idle=0.3,
                    backpressure=0.4, seed=seed)
    chk = check(col, words, weights, bias, lif, 4, n_mask)
    assert chk.match, chk.mismatches
    assert not col.errors and col.seen.all()  # empty-queue check: nothing missing, nothing extra
    assert res["rtl_cycles"] >= core_cycles(words, weights, LoASConfig(pes=4)).total


def test_core_all_silent_layer_back_to_back_beats():
    """An all-silent layer (an untrained network's): every fiber is empty, results come back to back
    with out.valid held high for many cycles; the testbench must count every beat (regression: it
    once counted rising edges of valid and hung)."""
    g = Geometry(c_in=8, h=8, w=8, kernel=3, stride=1, padding=1, c_out=16)
    words, weights, bias, lif, n_mask = _layer(3, g, silent=1.0, density=0.5)
    assert not words.any()
    res, col = _run(words, weights, bias, lif, n_mask, simulator="verilator", pes=4)
    chk = check(col, words, weights, bias, lif, 4, n_mask)
    assert chk.match, chk.mismatches
    assert not col.errors and col.seen.all()
    assert res["rtl_cycles"] == core_cycles(words, weights, LoASConfig(pes=4)).total


def _run_level(level, words, weights, bias, lif, n_mask, params, cap):
    """One layer at one level of the design: Amaranth's simulator or a cocotb simulator (the two
    host back ends share Collector and check)."""
    if level == "amaranth":
        from hw.amsim import run_core_sim

        res = run_core_sim(words, weights, bias, lif, n_mask, params, cap)
        assert not res["stream_errors"], res["stream_errors"][:5]
        return res
    return run_core(words, weights, bias, lif, n_mask, params, cap, simulator=level)


@pytest.mark.parametrize("level", ["amaranth", "verilator"])
def test_levels_agree(level):
    """The same layer at the levels: golden model (outputs), cycle model (cycles), Amaranth's
    simulator, Verilator (the build of test_core_layer_trace, so no new one). Icarus runs this very
    layer in test_core_layer_trace[icarus-*] (over two minutes a run: not repeated here)."""
    g = Geometry(c_in=16, h=4, w=4, kernel=3, stride=1, padding=1, c_out=6)  # M=16, K=144, N=6
    words, weights, bias, lif, n_mask = _layer(5, g)
    params = CoreParams(pes=4, timesteps=4)
    cap = Capacity.fit(words, weights, bias, exact=True).replace(rows=64, cols=16, k=288, a_nnz=64 * 288,
                                                                 b_nnz=288 * 16)
    res = _run_level(level, words, weights, bias, lif, n_mask, params, cap)
    chk = check(res["collector"], words, weights, bias, lif, 4, n_mask)
    assert chk.match, chk.mismatches
    assert res["rtl_cycles"] == core_cycles(words, weights, params).total
