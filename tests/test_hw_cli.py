"""`loas rtl ...` command line: user errors (exit 2, list what exists) and Verilog + lint."""

from __future__ import annotations

import numpy as np
import pytest

from loas.cli import main
from sim.config import LoASConfig
from sim.synthetic import random_weights, random_words, write_random_workload
from sim.trace import Geometry
from sim.tppe import core_cycles, tppe_cycles


@pytest.fixture(scope="module")
def workload(tmp_path_factory):
    d = tmp_path_factory.mktemp("wl") / "tiny"
    return write_random_workload(d, {"conv3": Geometry(8, 6, 6, 3, 1, 1, 8)}, silent_ratio=0.75,
                                 weight_density=0.05, seed=1)


def test_unknown_layer_lists_layers(workload, capsys):
    assert main(["rtl", "sim", str(workload), "--layer", "conv9"]) == 2
    err = capsys.readouterr().err
    assert "conv9" in err and "conv3" in err


def test_unknown_workload_lists_workloads(capsys):
    assert main(["rtl", "sim", "no-such-workload", "--layer", "conv3"]) == 2
    assert "available" in capsys.readouterr().err


def test_unknown_simulator(workload, capsys):
    assert main(["rtl", "sim", str(workload), "--layer", "conv3", "--simulator", "vcs"]) == 2
    assert "vcs" in capsys.readouterr().err


def test_timing_model_fast_prefix_closed_form():
    """With a fast prefix-sum on both sides and deep FIFOs, a job holds its TPPE one cycle per empty
    chunk pair or per match (its F side; the next job starts in the cycle after, the corrections
    trail in the result slots); a row's last result comes one cycle after its last F cycle when
    that cycle pushed a match (its correction lands a cycle later)."""
    rng = np.random.default_rng(4)
    M, K, N = 32, 700, 9
    words = random_words(rng, (M, K), 4, 0.7)
    weights = random_weights(rng, (K, N), 0.1)
    cfg = LoASConfig(laggy_adders=128, fifo_depth=64)
    W = 128
    C = -(-K // W)
    nz_a = np.zeros((M, C * W), bool)
    nz_a[:, :K] = words != 0
    nz_b = np.zeros((C * W, N), bool)
    nz_b[:K] = weights != 0
    per_chunk = np.einsum("mck,cnk->mnc", nz_a.reshape(M, C, W).astype(int),
                          nz_b.T.reshape(N, C, W).transpose(1, 0, 2).astype(int))
    f_side = np.maximum(per_chunk, 1).sum(axis=2)
    drain = (per_chunk[:, -1, -1] > 0).astype(np.int64)
    expect = f_side.copy()
    expect[:, -1] += drain
    assert (tppe_cycles(words, weights, cfg, lookahead=1) == expect).all()
    core = core_cycles(words, weights, LoASConfig(pes=4, laggy_adders=128, fifo_depth=64), lookahead=1)
    g = f_side.reshape(8, 4, N)
    steps = g[:, :, :-1].max(axis=1).sum(axis=1) + (g[:, :, -1] + drain.reshape(8, 4)).max(axis=1)
    assert core.total == steps.sum()
    assert core.busy.sum() == expect.sum()


@pytest.mark.parametrize("L", [1, 2, 3, 4, 8])
def test_timing_model_lookahead_reference(L):
    """Fast prefix-sum, deep FIFOs: a cycle-by-cycle walk of the F side's window (L chunk pairs:
    the first with a match gives one match, none moves the window on by L; the F side ends on a
    match whose window reaches past the fiber), plus 1 on a row's last job when its F side ended on
    a match. Sparse weights so that many chunk pairs are empty."""
    rng = np.random.default_rng(10 + L)
    K, W = 1500, 128
    words = random_words(rng, (12, K), 4, 0.8)
    weights = random_weights(rng, (K, 7), 0.02)
    C = -(-K // W)
    nz_a = np.zeros((12, C * W), bool)
    nz_a[:, :K] = words != 0
    nz_b = np.zeros((C * W, 7), bool)
    nz_b[:K] = weights != 0
    per_chunk = np.einsum("mck,cnk->mnc", nz_a.reshape(12, C, W).astype(int),
                          nz_b.T.reshape(7, C, W).transpose(1, 0, 2).astype(int))
    expect = np.zeros((12, 7), np.int64)
    for mi in range(12):
        for ni in range(7):
            left = list(per_chunk[mi, ni])
            c, cyc, pushed = 0, 0, False
            while c < C:
                win = [i for i in range(c, min(c + L, C)) if left[i] > 0]
                cyc += 1
                pushed = bool(win)
                if win:
                    w0 = c
                    c = win[0]
                    left[c] -= 1
                    if left[c] == 0 and w0 + L >= C and not any(left[c + 1:]):
                        break  # the window showed the rest of the fiber empty
                    c += left[c] == 0
                else:
                    c += L
            expect[mi, ni] = cyc + (pushed and ni == 6)
    got = tppe_cycles(words, weights, LoASConfig(laggy_adders=128, fifo_depth=64), lookahead=L)
    assert (got == expect).all()
    if L > 1:
        assert got.sum() < tppe_cycles(words, weights, LoASConfig(laggy_adders=128, fifo_depth=64),
                                       lookahead=1).sum()


def test_core_params_one_source():
    """The cycle model takes the same parameter object as the RTL; a LoASConfig gives its core;
    keyword overrides go through CoreParams' checks."""
    from sim.params import CoreParams

    w = np.zeros((2, 128), np.uint16)
    b = np.zeros((128, 2), np.int8)
    assert CoreParams.from_config(LoASConfig()) == CoreParams()
    assert core_cycles(w, b, LoASConfig(pes=2)).total == core_cycles(w, b, CoreParams(pes=2)).total
    with pytest.raises(ValueError, match="schedule"):
        core_cycles(w, b, LoASConfig(), schedule="greedy")
    with pytest.raises(ValueError, match="lookahead"):
        tppe_cycles(w, b, LoASConfig(), lookahead=0)
    with pytest.raises(TypeError, match="lookahead"):
        core_cycles(w, b, LoASConfig(), lookahead=2.0)
    with pytest.raises(TypeError, match="CoreParams"):
        core_cycles(w, b, {"pes": 2})


def test_timing_model_laggy_never_faster():
    rng = np.random.default_rng(5)
    words = random_words(rng, (20, 500), 4, 0.6)
    weights = random_weights(rng, (500, 7), 0.2)
    lag = tppe_cycles(words, weights, LoASConfig())
    fast = tppe_cycles(words, weights, LoASConfig(laggy_adders=128))
    assert (lag >= fast).all()


@pytest.mark.rtl
def test_verilog_and_lint(tmp_path, capsys):
    assert main(["rtl", "verilog", "--out", str(tmp_path)]) == 0
    files = sorted(p.name for p in tmp_path.glob("*.v"))
    assert {"loas_core.v", "loas_lane.v", "loas_tppe.v", "loas_f_side.v", "loas_plif.v", "loas_inner_join.v"} <= set(files)


def test_scoreboard_reports_mismatches():
    """hw.host.check: a flipped output word and a missing output are reported, not ignored."""
    from hw.host import Collector, check
    from sim.golden import LIFParams, run_layer

    rng = np.random.default_rng(8)
    words = random_words(rng, (5, 200), 4, 0.5)
    weights = random_weights(rng, (200, 6), 0.3)
    bias = rng.integers(-20, 20, size=6)
    lif = LIFParams(30)
    gold = run_layer(words, weights, bias, lif, 4, n_mask=0)
    col = Collector(5, 6, 2)
    for r in range(5):
        for n in range(6):
            w = int(gold.out_words[r, n])
            col.beat(r % 2, r, n, w, int(w != 0), int((gold.out_words[r, :n] != 0).sum()))
    assert check(col, words, weights, bias, lif, 4, 0).match
    col.words[2, 3] ^= 1
    res = check(col, words, weights, bias, lif, 4, 0)
    assert not res.match and any("word (2, 3)" in m for m in res.mismatches)
    col.words[2, 3] ^= 1
    col.seen[4, 5] = False
    res = check(col, words, weights, bias, lif, 4, 0)
    assert not res.match and any("never emitted" in m for m in res.mismatches)


class _Tiny:
    """A one-register design: the build machinery without minutes of compilation."""

    def __new__(cls, width):
        from amaranth import Module, Signal
        from amaranth.lib import wiring
        from amaranth.lib.wiring import In, Out

        class Tiny(wiring.Component):
            def __init__(self):
                super().__init__({"d": In(width), "q": Out(width)})

            def elaborate(self, platform):
                m = Module()
                r = Signal(width)
                m.d.sync += r.eq(self.d)
                m.d.comb += self.q.eq(r)
                return m

        return Tiny()


def test_build_announces_itself_and_is_reused(tmp_path, capsys, monkeypatch):
    """The RTL build says what it builds (cache key, expected time from the last build, stored
    beside the builds); the next run says it reuses it."""
    import hw.cosim as cosim

    if not cosim.simulator_available("icarus"):
        pytest.skip("iverilog not installed")
    monkeypatch.setattr(cosim, "BUILD", tmp_path / "rtl")
    cosim.build("tiny", lambda: _Tiny(3), {"width": 3}, "icarus")
    err = capsys.readouterr().err
    assert "building the icarus model of tiny (cache key tiny-" in err and "no earlier build" in err
    assert float((tmp_path / "rtl" / "icarus" / "tiny.last_build_s").read_text()) >= 0
    cosim.build("tiny", lambda: _Tiny(3), {"width": 3}, "icarus")
    assert "reusing the icarus build of tiny (cache key tiny-" in capsys.readouterr().err
    cosim.build("tiny", lambda: _Tiny(4), {"width": 4}, "icarus")
    assert "the last one took" in capsys.readouterr().err
