"""`loas sim`, `loas compare`, `loas sweep` as a user runs them."""

import csv
import json

import pytest
from conftest import loas

from sim.synthetic import write_random_workload
from sim.trace import Geometry




@pytest.fixture(scope="module")
def wl(tmp_path_factory):
    return write_random_workload(tmp_path_factory.mktemp("w") / "small",
                                 {"conv2": Geometry(16, 8, 8, 3, 1, 1, 32), "fc": Geometry.fc(128, 10)},
                                 T=4, seed=3, weight_density=0.1)


def test_sim_json_has_per_layer_and_total(wl):
    r = loas("sim", wl, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    keys = {"cycles", "effectual_ops", "sram_bytes", "dram_bytes", "energy"}
    assert [l["layer"] for l in out["layers"]] == ["conv2", "fc"]
    for part in out["layers"] + [out["total"]]:
        assert keys <= set(part)
    assert out["total"]["cycles"] == sum(l["cycles"] for l in out["layers"])
    g = json.loads(loas("golden", wl, "--layer", "conv2", "--json").stdout)
    assert out["layers"][0]["effectual_ops"] == g["effectual_ops"]
    one = json.loads(loas("sim", wl, "--layer", "fc", "--design", "gospa", "--json").stdout)
    assert one["design"] == "gospa" and len(one["layers"]) == 1


def test_compare_writes_report(wl, tmp_path):
    r = loas("compare", wl, "--out", tmp_path / "rep", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out["baselines"]) == {"sparten", "gospa", "gamma", "ptb", "stellar"}
    for v in out["baselines"].values():
        assert v["speedup"] > 0 and v["energy_efficiency"] > 0 and len(v["layers"]) == 2
    for f in ("compare.csv", "compare.json", "speedup.png", "energy_breakdown.png", "layer_speedup.png"):
        assert (tmp_path / "rep" / f).stat().st_size > 0
    with open(tmp_path / "rep" / "compare.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["design"], r["layer"]) for r in rows} >= {("loas", "total"), ("gamma", "conv2")}
    txt = loas("compare", wl, "--designs", "sparten", "--out", tmp_path / "r2")
    assert txt.returncode == 0 and "sparten" in txt.stdout


def test_sweep_runs_workers_and_writes_table(tmp_path):
    r = loas("sweep", "--param", "pes=4,8,16", "--param", "timesteps=4,8", "--layer", "conv13", "--jobs", "2",
             "--out", tmp_path / "sw", "--json")
    assert r.returncode == 0, r.stderr
    assert "sweep" in r.stderr and "6/6" in r.stderr  # tqdm progress bar
    rows = json.loads(r.stdout)["rows"]
    assert [(x["pes"], x["timesteps"]) for x in rows] == [(p, t) for p in (4, 8, 16) for t in (4, 8)]
    assert all(x["speedup_vs_sparten"] > 0 for x in rows)
    for f in ("sweep.csv", "sweep.json", "sweep.png"):
        assert (tmp_path / "sw" / f).stat().st_size > 0


@pytest.mark.parametrize("args, needle", [
    (("sweep", "--param", "pez=4"), "key 'pez'"),
    (("sweep", "--param", "pes=0"), "key 'pes'"),
    (("sweep", "--param", "loop_order=xyz"), "key 'loop_order'"),
    (("sweep", "--param", "tile.n=2048"), "key 'tile.n'"),
    (("sweep", "--param", "tile.m=256"), "key 'buffer.capacity_kb': the tiles need"),
    (("sweep", "--param", "dram.latency=0"), "key 'dram.latency'"),
    (("sweep", "--param", "dram_gbps=64"), "key 'dram_gbps'"),
])
def test_sweep_errors_are_one_line(args, needle):
    r = loas(*args)
    assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1


def test_sweep_points_set_the_accelerators_memory_system():
    """``dram.*`` and ``tile.*`` sweep keys reach the chip the LoAS model runs on."""
    from sim.config import LoASConfig
    from sim.params import chip_from_config
    from sim.report import point_config

    cfg = point_config(LoASConfig(), {"dram.latency": 40, "dram.beat_cycles": 2, "tile.n": 32, "buffer.capacity_kb": 512})
    chip = chip_from_config(cfg)
    assert (chip.mem.latency, chip.mem.beat_cycles, chip.tile_cols, chip.buffer_kib) == (40, 2, 32, 512)
    assert chip.mem.bytes_per_cycle() == 32


def test_a_layer_that_does_not_fit_is_one_line(wl, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("tile: {max_k: 16}\n")
    for argv in (("sim", wl), ("compare", wl, "--out", tmp_path / "x")):
        r = loas(*argv, "--config", cfg)
        assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
        assert "exceeds this build's max_k = 16" in r.stderr and "layer " in r.stderr
    cfg.write_text("loop_order: nmtk\n")  # both methods run the ablation's loop order
    for extra in ((), ("--fidelity", "paper")):
        r = loas("sim", wl, "--config", cfg, *extra)
        assert r.returncode == 0, r.stderr


def test_config_errors_name_file_and_key(wl, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("pes: 16\nbuffer: {capacity_kb: 256, bankz: 4}\n")
    r = loas("sim", wl, "--config", bad)
    assert r.returncode == 2 and str(bad) in r.stderr and "buffer.bankz" in r.stderr
    bad.write_text("timesteps: 2\n")
    r = loas("sim", wl, "--config", bad)
    assert r.returncode == 2 and "timesteps" in r.stderr and str(bad) in r.stderr
    e = tmp_path / "e.yaml"
    e.write_text("dram_nj_per_access: fast\n")
    r = loas("compare", wl, "--energy", e, "--out", tmp_path / "x")
    assert r.returncode == 2 and str(e) in r.stderr and "dram_nj_per_access" in r.stderr
    r = loas("compare", wl, "--designs", "tpu", "--out", tmp_path / "x")
    assert r.returncode == 2 and "tpu" in r.stderr


def test_cli_design_choices_come_from_the_registry():
    from loas.cli import build_parser
    from sim import designs

    sub = next(a for a in build_parser()._actions if a.dest == "==SUPPRESS==" or getattr(a, "choices", None)
               and "sim" in a.choices)
    sim = sub.choices["sim"]
    design = next(a for a in sim._actions if a.dest == "design")
    assert tuple(design.choices) == designs.NAMES
    assert designs.BASELINES == tuple(n for n in designs.NAMES if n != "loas")
    assert set(designs.cycle_models()) == set(designs.NAMES)
    # the energy schemas name the registry's designs (one constant set per design and fidelity)
    from dataclasses import fields

    from sim.energy import DesignEnergies
    from sim.paper import SPECS, PaperDesignEnergies, spec_name

    assert tuple(f.name for f in fields(DesignEnergies)) == designs.NAMES
    assert tuple(f.name for f in fields(PaperDesignEnergies)) == designs.PAPER
    assert {spec_name(d, o) for d in designs.PAPER for o in ("mntk", "nmtk")} == set(SPECS)


def test_fidelity_both_splits_the_ratio_into_causes(wl, tmp_path):
    r = loas("compare", wl, "--fidelity", "both", "--out", tmp_path / "f", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    rows = out["rows"]
    assert {x["design"] for x in rows} == {"loas", "sparten", "gospa", "gamma"}
    for x in rows:
        shares = sum(x[f"{k}_share"] for k in ("work", "scan", "imbalance", "memory", "merge"))
        assert x["ratio"] == pytest.approx(1 + shares, rel=1e-9), x
    net = {x["design"]: x for x in rows if x["layer"] == "network"}
    assert net["sparten"]["scan_cycles"] > 0 and net["gamma"]["merge_cycles"] > 0
    assert net["gospa"]["scan_cycles"] == 0 and net["loas"]["merge_cycles"] == 0
    sp = {(x["baseline"], x["layer"]): x for x in out["speedups"]}
    assert sp["sparten", "network"]["paper_speedup"] == pytest.approx(
        net["sparten"]["paper_cycles"] / net["loas"]["paper_cycles"])
    for f in ("fidelity.csv", "fidelity.json", "fidelity.png", "compare.csv"):
        assert (tmp_path / "f" / f).stat().st_size > 0
    txt = loas("sim", wl, "--fidelity", "both", "--design", "gamma", "--out", tmp_path / "s")
    assert txt.returncode == 0 and "network" in txt.stdout and (tmp_path / "s" / "fidelity.png").is_file()
    p = json.loads(loas("sim", wl, "--fidelity", "paper", "--json").stdout)
    assert p["total"]["cycles"] == net["loas"]["paper_cycles"]


def test_paper_fidelity_refuses_designs_it_does_not_model(wl, tmp_path):
    r = loas("sim", wl, "--fidelity", "paper", "--design", "ptb")
    assert r.returncode == 2 and "ptb" in r.stderr and "Traceback" not in r.stderr
    r = loas("compare", wl, "--fidelity", "both", "--designs", "sparten,stellar", "--out", tmp_path / "x")
    assert r.returncode == 2 and "stellar" in r.stderr


def test_fidelity_reports_are_written_whole(wl, tmp_path):
    # a --fidelity report replaces the previous one in one swap: no stale file of the old run is
    # left beside the new ones, no temp folder is left, and a folder of someone else's is refused
    out = tmp_path / "f"
    assert loas("compare", wl, "--fidelity", "both", "--out", out).returncode == 0
    assert (out / "compare.csv").is_file()
    r = loas("compare", wl, "--fidelity", "paper", "--out", out)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["paper.csv", "paper.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["f"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    r = loas("sim", wl, "--fidelity", "both", "--design", "gamma", "--out", mine)
    assert r.returncode == 2 and "notes.txt" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert (mine / "notes.txt").read_text() == "keep" and not (mine / "fidelity.csv").exists()
