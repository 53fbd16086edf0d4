"""Data integrity: whole writes, one writer at a time, output paths checked before the work, no
garbage accepted (sim/atomic.py and the commands that use it)."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from conftest import ROOT, loas

from sim.atomic import check_output, replace_dir, write_file
from sim.errors import UserError
from sim.report import SweepError, parse_params
from sim.synthetic import write_random_workload
from sim.trace import Geometry

COMPARE = ("compare.csv", "compare.json", "speedup.png", "energy_breakdown.png", "layer_speedup.png")


@pytest.fixture(scope="module")
def wl(tmp_path_factory):
    return write_random_workload(tmp_path_factory.mktemp("w") / "small", {"fc": Geometry.fc(64, 8)},
                                 T=4, seed=3, weight_density=0.2)


# --- replace_dir / write_file -------------------------------------------------------------------
def test_replace_dir_swaps_whole_and_keeps_the_old_on_error(tmp_path):
    target = tmp_path / "r"
    with replace_dir(target) as d:
        (d / "a").write_text("1")
    assert (target / "a").read_text() == "1"
    with pytest.raises(RuntimeError):
        with replace_dir(target) as d:
            (d / "a").write_text("2")
            raise RuntimeError("killed half way")
    assert (target / "a").read_text() == "1" and sorted(os.listdir(tmp_path)) == ["r"]  # no lock left
    with replace_dir(target) as d:
        (d / "b").write_text("3")
    assert sorted(os.listdir(target)) == ["b"]  # a swap, not a merge
    with pytest.raises(UserError, match="exists; give --force"):
        with replace_dir(target, force=False, what="workload"):
            pass
    with pytest.raises(UserError, match=r"holds b, not files of a workload; refusing"):
        with replace_dir(target, owned=lambda n: n.endswith(".npz"), what="workload"):
            pass
    assert sorted(os.listdir(target)) == ["b"]


def test_a_killed_writers_leftovers_are_cleaned_and_a_half_swap_restored(tmp_path):
    target = tmp_path / "r"
    target.mkdir()
    (target / "a").write_text("old")
    (tmp_path / ".r.tmp-dead").mkdir()  # a writer killed while building
    with replace_dir(target) as d:
        (d / "a").write_text("new")
    assert not (tmp_path / ".r.tmp-dead").exists() and (target / "a").read_text() == "new"
    os.rename(target, tmp_path / ".r.old-1-1")  # a two-rename swap killed between its renames
    with pytest.raises(UserError, match="exists"):
        with replace_dir(target, force=False):
            pass
    assert (target / "a").read_text() == "new"


def test_a_second_writer_waits_for_the_lock_and_says_so(tmp_path):
    target = tmp_path / "r"
    code = ("import sys, time; sys.path.insert(0, sys.argv[2]); from sim.atomic import replace_dir\n"
            "with replace_dir(sys.argv[1]) as d:\n"
            "    print('in', flush=True); (d / 'who').write_text('first'); time.sleep(1.0)\n")
    with subprocess.Popen([sys.executable, "-c", code, str(target), str(ROOT)], stdout=subprocess.PIPE,
                          text=True) as first:
        assert first.stdout.readline() == "in\n"
        second = subprocess.run([sys.executable, "-c", code.replace("first", "second"), str(target),
                                 str(ROOT)], capture_output=True, text=True, timeout=60)
    assert second.returncode == 0 and "waiting for another process writing" in second.stderr
    assert (target / "who").read_text() == "second"


def test_write_file_leaves_no_temp_on_error(tmp_path):
    p = tmp_path / "f.txt"
    write_file(p, "one")

    def boom(f):
        f.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_file(p, boom)
    assert p.read_text() == "one" and os.listdir(tmp_path) == ["f.txt"]


def test_write_file_removes_a_sigkilled_writers_temp_but_not_a_live_ones(tmp_path):
    import subprocess
    import sys

    p = tmp_path / "m.pt.state"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    (tmp_path / f".m.pt.state.{dead}.abc.tmp").write_bytes(b"half")  # what a SIGKILL mid-write leaves
    live = tmp_path / f".m.pt.state.{os.getppid()}.abc.tmp"  # a writer still running
    live.write_bytes(b"busy")
    other = tmp_path / f".other.{dead}.abc.tmp"  # another file's temp is not ours to touch
    other.write_bytes(b"x")
    write_file(p, "whole")
    assert sorted(os.listdir(tmp_path)) == sorted(["m.pt.state", live.name, other.name])


# --- output paths -------------------------------------------------------------------------------
def test_check_output_refuses_files_and_paths_under_files(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(UserError, match=r"--out .*file: is a file, not a directory"):
        check_output(f)
    with pytest.raises(UserError, match=r"lies under .*file, which is a file"):
        check_output(f / "sub" / "x")
    with pytest.raises(UserError, match="is a directory, not a file"):
        check_output(tmp_path, kind="file")
    check_output(tmp_path / "new" / "deeper")
    if os.geteuid() != 0:  # root may write anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(UserError, match="cannot be written"):
            check_output(ro / "x")


@pytest.mark.parametrize("argv", [
    ["compare", "WL", "--out", "FILE"],
    ["compare", "WL", "--out", "FILE/sub"],
    ["sweep", "--param", "pes=4", "--out", "FILE/x"],
    ["train", "--out", "FILE/m.pt"],
    ["export", "--checkpoint", "nope.pt", "--out", "FILE"],
    ["rtl", "verilog", "--out", "FILE"],
    ["prune", "--out", "FILE/run"],
])
def test_every_out_that_cannot_be_written_is_one_line_before_work(wl, tmp_path, argv):
    f = tmp_path / "file"
    f.write_text("keep")
    argv = [a.replace("FILE", str(f)).replace("WL", str(wl)) for a in argv]
    t0 = time.time()
    r = loas(*argv)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and str(f) in r.stderr
    assert f.read_text() == "keep" and time.time() - t0 < 30


def test_compare_refuses_to_replace_a_folder_that_is_not_a_report(wl, tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    r = loas("compare", wl, "--out", tmp_path)
    assert r.returncode == 2 and "mine.txt, not files of a compare report" in r.stderr
    assert (tmp_path / "mine.txt").read_text() == "precious"


# --- concurrent writers, killed at random ------------------------------------------------------
def _spawn(argv):
    return subprocess.Popen([sys.executable, "-m", "loas.cli", *map(str, argv)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def _race(argvs, kill, rng, max_delay):
    procs = [_spawn(a) for a in argvs]
    for i in kill:
        time.sleep(rng.uniform(0, max_delay))
        procs[i].send_signal(signal.SIGKILL)
    errs = [p.communicate(timeout=120)[1] for p in procs]
    rcs = [p.returncode for p in procs]
    for i, (rc, err) in enumerate(zip(rcs, errs)):
        if i not in kill:
            assert rc == 0 and "Traceback" not in err, err
    return rcs


def test_concurrent_compares_leave_one_whole_report(wl, tmp_path):
    rng = np.random.default_rng(7)
    out = tmp_path / "rep"
    designs = ["sparten", "gospa,ptb", "sparten,gamma"]
    rcs = _race([["compare", wl, "--designs", d, "--out", out] for d in designs], kill=[1], rng=rng,
                max_delay=1.5)
    assert sorted(os.listdir(out)) == sorted(COMPARE)
    assert all((out / f).stat().st_size > 0 for f in COMPARE)
    rep = json.loads((out / "compare.json").read_text())
    with open(out / "compare.csv") as f:
        csv_designs = {r["design"] for r in csv.DictReader(f)}
    assert csv_designs == {"loas", *rep["baselines"]}  # CSV and JSON of one run
    # one run's report (a writer killed after its swap has a whole report in place too)
    assert ",".join(sorted(rep["baselines"])) in {",".join(sorted(d.split(","))) for d in designs}
    assert any(rc == 0 for rc in rcs)


def test_concurrent_exports_leave_one_consistent_workload(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from models.checkpoint import build_from_meta, model_meta, save_model
    from test_models_data import make_fmnist

    fm = tmp_path / "fm"
    fm.mkdir()
    make_fmnist(fm, 6, "train")
    make_fmnist(fm, 6, "test")
    meta = model_meta("default", dataset="fashion-mnist", width=2)
    torch.manual_seed(0)
    save_model(build_from_meta(meta), meta, tmp_path / "m.pt")
    out = tmp_path / "wl"
    base = ["export", "--checkpoint", tmp_path / "m.pt", "--data", fm, "--check-samples", 0, "--out", out]
    from loas.cli import main

    base = [str(a) for a in base]
    assert main([*base, "--samples", "1"]) == 0
    assert main([*base, "--samples", "1"]) == 2
    assert "the workload exists; give --force" in capsys.readouterr().err
    rng = np.random.default_rng(3)
    _race([[*base, "--samples", s, "--force"] for s in ("2", "3", "4")], kill=[1], rng=rng, max_delay=3.0)
    man = yaml.safe_load((out / "manifest.yaml").read_text())
    S = man["provenance"]["samples"]
    for e in man["layers"]:  # every layer of the run that wrote the manifest
        with np.load(out / e["file"]) as z:
            assert z["spike_words"].shape[0] == S
    assert sorted(os.listdir(out)) == sorted(["manifest.yaml", *(e["file"] for e in man["layers"])])
    assert loas("trace", "verify", out).returncode == 0


# --- sweep parameters ---------------------------------------------------------------------------
def test_a_repeated_param_key_names_both():
    with pytest.raises(SweepError, match=r"--param 'pes=4' and --param 'pes=8': the same key 'pes'"):
        parse_params(["pes=4", "pes=8"])
    with pytest.raises(SweepError, match=r"'T=4' and --param 'timesteps=8'.*'timesteps'"):
        parse_params(["T=4", "timesteps=8"])
    assert parse_params(["pes=4,8", "T=4"]) == {"pes": [4, 8], "timesteps": [4]}


# --- finite numbers and counts ------------------------------------------------------------------
@pytest.mark.parametrize("kw, flag", [
    ({"lr": float("inf")}, "--lr"), ({"lr": float("nan")}, "--lr"), ({"lr": 0.0}, "--lr"),
    ({"momentum": float("nan")}, "--momentum"), ({"weight_decay": -1.0}, "--weight-decay"),
    ({"lr_min_ratio": 2.0}, "--lr-min-ratio"), ({"train_subset": -5}, "--train-subset"),
    ({"train_subset": 0}, "--train-subset"), ({"cutout": -3}, "--cutout"), ({"pad": -1}, "--pad"),
])
def test_training_hyper_parameters_are_finite_and_counts_positive(kw, flag):
    pytest.importorskip("torch")
    from models.train import TrainConfig

    with pytest.raises(UserError, match=f"^{flag}: must be"):
        TrainConfig(**kw)


@pytest.fixture
def fm(tmp_path):
    pytest.importorskip("torch")
    from test_models_data import make_fmnist

    root = tmp_path / "fm"
    root.mkdir()
    make_fmnist(root, 6, "train")
    make_fmnist(root, 6, "test")
    return root


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(fm, tmp_path):
    import torch

    from models.data import load_dataset
    from models.train import TrainConfig, load_checkpoint, train

    class Diverging(torch.nn.Module):  # finite for the first epoch (3 batches), NaN after
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(28 * 28, 10)
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            out = self.lin(x.flatten(1))
            return out * float("nan") if self.calls > 3 else out

    ds = load_dataset("fashion-mnist", fm, "train")
    ck = tmp_path / "run.state"
    with pytest.raises(UserError, match=r"training diverged: loss nan at epoch 2, batch 1; the last good "
                                        r"checkpoint .*run.state \(epoch 1\) is kept"):
        train(Diverging(), ds, TrainConfig(epochs=3, batch_size=2), ck, progress=False, log=lambda m: None)
    state = load_checkpoint(ck)
    assert state["epoch"] == 1 and all(torch.isfinite(t).all() for t in state["model"].values())
    with pytest.raises(UserError, match=r"--train-subset: 7 samples asked for, the training set has 6"):
        train(Diverging(), ds, TrainConfig(epochs=1, train_subset=7), tmp_path / "x", progress=False)


def test_a_nan_checkpoint_is_not_exported(fm, tmp_path, capsys):
    import torch

    from loas.cli import main
    from models.checkpoint import build_from_meta, model_meta, save_model

    meta = model_meta("default", dataset="fashion-mnist", width=2)
    model = build_from_meta(meta)
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("nan")
    save_model(model, meta, tmp_path / "nan.pt")
    rc = main(["export", "--checkpoint", str(tmp_path / "nan.pt"), "--data", str(fm), "--samples", "1",
               "--out", str(tmp_path / "wl")])
    err = capsys.readouterr().err
    assert rc == 2 and "nan.pt: tensor" in err and "non-finite values (nan)" in err
    assert not (tmp_path / "wl").exists()


@pytest.mark.parametrize("argv", [["profile", "CK", "--data", "FM", "--test-subset", "-1"],
                                  ["profile", "CK", "--data", "FM", "--test-subset", "7"]])
def test_a_test_subset_outside_the_set_is_refused(fm, tmp_path, capsys, argv):
    from loas.cli import main
    from models.checkpoint import build_from_meta, model_meta, save_model

    meta = model_meta("default", dataset="fashion-mnist", width=2)
    save_model(build_from_meta(meta), meta, tmp_path / "m.pt")
    rc = main([a.replace("CK", str(tmp_path / "m.pt")).replace("FM", str(fm)) for a in argv])
    assert rc == 2 and "--test-subset" in capsys.readouterr().err


@pytest.mark.parametrize("text, key", [("sram_nj_per_access: .nan\n", "sram_nj_per_access"),
                                       ("dram_nj_per_access: 0\n", "dram_nj_per_access"),
                                       ("designs: {loas: {op_pj: .inf}}\n", "designs.loas.op_pj"),
                                       ("designs: {gospa: {index_overhead: .nan}}\n", "index_overhead")])
def test_energy_constants_must_be_finite_and_positive(tmp_path, text, key):
    from sim.config import load
    from sim.energy import EnergyConfig
    from sim.errors import ConfigError

    p = tmp_path / "e.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=key):
        load(str(p), EnergyConfig)


# --- the Prosperity pickle: views checked against their storage -------------------------------
class _View:
    """Pickles as torch's tensor rebuild call with a view chosen by the test (a crafted file)."""

    def __init__(self, n, offset, size, stride, fill=0):
        import torch

        self.storage = torch.full((n,), fill, dtype=torch.uint8).view(torch.bool).untyped_storage()
        self.args = (offset, size, stride)

    def __reduce__(self):
        import collections

        import torch

        typed = torch.TypedStorage(wrap_storage=self.storage, dtype=torch.bool, _internal=True)
        return torch._utils._rebuild_tensor_v2, (typed, *self.args, False, collections.OrderedDict())


@pytest.mark.parametrize("view, msg", [
    (_View(4, 0, (4, 3, 100, 100), (30000, 10000, 100, 1)), "needs 120000 storage elements but the "
                                                            "storage holds 4; refused"),
    (_View(4, 2, (1, 1, 1, 3), (3, 3, 3, 1)), "needs 5 storage elements"),
    (_View(4, 0, (1, 2, 10**9, 1), (4, 1, 0, 1)), "stride 0 is 0"),
    (_View(4, 0, (1, 1, 2, 2), (4, 4, 1, 1)), "overlaps another dimension"),
    (_View(4, -1, (1, 1, 1, 1), (1, 1, 1, 1)), "negative"),
    (_View(4, 0, (1, 1, 2, 2), (4, 4, 2, 1), fill=7), "byte values other than 0 and 1"),
])
def test_a_tensor_view_its_storage_cannot_hold_is_refused(tmp_path, view, msg):
    import collections
    import pickle

    import torch

    from models.prosperity import ProsperityFormatError, read_prosperity

    d = collections.defaultdict(list)
    d["Conv2d"] += [torch.zeros(1, 3, 2, 2, dtype=torch.bool), view]
    with open(tmp_path / "x.pkl", "wb") as f:
        pickle.dump(d, f)
    with pytest.raises(ProsperityFormatError, match=rf"x.pkl: field 'pickle': refused .*{msg}"):
        read_prosperity(tmp_path / "x.pkl")


def test_a_legal_view_still_loads(tmp_path):
    import collections
    import pickle

    import torch

    from models.prosperity import read_prosperity

    d = collections.defaultdict(list)
    d["Conv2d"] += [torch.zeros(1, 3, 2, 2, dtype=torch.bool), _View(8, 0, (2, 1, 2, 2), (4, 4, 2, 1), 1)]
    with open(tmp_path / "x.pkl", "wb") as f:
        pickle.dump(d, f)
    assert read_prosperity(tmp_path / "x.pkl")["Conv2d"][1].all()


# --- workload names -----------------------------------------------------------------------------
@pytest.mark.parametrize("name, msg", [("../x", "invalid workload name '../x'"), ("/abs", "invalid workload"),
                                       ("", "invalid workload name ''"), ("default", "exists; give --force")])
def test_import_prosperity_name_is_a_plain_new_name(tmp_path, monkeypatch, capsys, name, msg):
    import shutil

    import sim.trace
    from loas.cli import main
    from test_models_prosperity import write_file as write_pickle

    traces = tmp_path / "traces"
    shutil.copytree(ROOT / "traces" / "default", traces / "default")
    before = {p.name: p.read_bytes() for p in (traces / "default").iterdir()}
    write_pickle(tmp_path / "s.pkl")
    monkeypatch.setattr(sim.trace, "TRACES_DIR", traces)
    monkeypatch.chdir(tmp_path)
    rc = main(["trace", "import-prosperity", str(tmp_path / "s.pkl"), "--name", name])
    err = capsys.readouterr().err
    assert rc == 2 and msg in err and err.count("\n") == 1, err
    assert {p.name: p.read_bytes() for p in (traces / "default").iterdir()} == before
    assert sorted(os.listdir(traces)) == ["default"] and sorted(os.listdir(tmp_path)) == ["s.pkl", "traces"]
