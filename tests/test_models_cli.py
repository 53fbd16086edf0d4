"""The models/ commands end to end on tiny generated data (in process, via loas.cli.main)."""

import json

import pytest

from loas.cli import main
from test_models_data import make_fmnist
from test_models_prosperity import write_file




@pytest.fixture
def fmnist(tmp_path):
    root = tmp_path / "fm"
    root.mkdir()
    make_fmnist(root, 40, "train")
    make_fmnist(root, 12, "test")
    return root


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_train_profile_finetune_export(tmp_path, fmnist, capsys):
    ck = tmp_path / "m.pt"
    common = ["--data", fmnist, "--width", "2"]
    rc, out, err = run(capsys, "train", *common, "--epochs", "1", "--batch-size", "16", "--out", ck,
                       "--json")
    assert rc == 0, err
    assert json.loads(out)["checkpoint"] == str(ck) and ck.is_file()
    rc, out, err = run(capsys, "profile", ck, "--data", fmnist, "--n-mask", "1", "--json")
    assert rc == 0, err
    rep = json.loads(out)
    assert rep["n_mask"] == 1 and rep["samples"] == 12
    rc, out, err = run(capsys, "profile", ck, "--data", fmnist)
    assert rc == 0 and "network" in out
    ft = tmp_path / "ft.pt"
    rc, out, err = run(capsys, "finetune", ck, "--data", fmnist, "--n-mask", "1", "--epochs", "1",
                       "--batch-size", "16", "--out", ft, "--json")
    assert rc == 0, err
    res = json.loads(out)
    assert set(res) >= {"acc_unmasked", "acc_masked", "epochs", "acc_final", "acc_best", "best_epoch"}
    assert res["acc_best"] == max(h["test_acc"] for h in res["epochs"])
    assert not list(tmp_path.glob("*.state"))  # finished runs leave nothing to resume
    rc, out, err = run(capsys, "export", "--checkpoint", ft, "--data", fmnist, "--samples", 2,
                       "--out", tmp_path / "wl", "--json")
    assert rc == 0, err
    rep = json.loads(out)
    assert [r["name"] for r in rep["layers"]] == ["conv2", "conv3", "conv4", "conv5"]
    assert all(r["golden"] == "equal" for r in rep["layers"])
    from sim.trace import load_workload

    wl = load_workload(tmp_path / "wl")
    assert wl.name == "wl"


def test_prune_counts_iterations_and_records_the_recipe(tmp_path, fmnist, capsys):
    out_dir, saved = tmp_path / "lth", tmp_path / "p.pt"
    rc, out, err = run(capsys, "prune", "--data", fmnist, "--width", "2", "--iterations", "3",
                       "--epochs", "2", "--batch-size", "16", "--bn-batches", "2", "--out", out_dir,
                       "--save", saved, "--json")
    assert rc == 0, err
    assert [r["round"] for r in json.loads(out)["rounds"]] == [0, 1, 2]  # 3 iterations, 2 prunes
    settings = json.loads((out_dir / "lth.json").read_text())["settings"]["prune"]
    assert settings["rounds"] == 2 and settings["rewind"] == "params" and settings["bn_batches"] == 2
    assert settings["rewind_epoch"] == 0  # round(20/150 * 2)
    assert settings["dense"]["loss"] == "per_timestep"
    rc, out, err = run(capsys, "prune", "--data", fmnist, "--rounds", "1", "--iterations", "2",
                       "--out", tmp_path / "x")
    assert rc == 2 and "--rounds/--iterations" in err


@pytest.mark.parametrize("argv, message", [
    (["profile", "x.pt", "--n-mask", "3"], "argument --n-mask: invalid choice: 3"),
    (["profile", "missing.pt"], "missing.pt: checkpoint not found"),
    (["train", "--data", "EMPTY", "--out", "m.pt"], "train-images-idx3-ubyte.gz"),
    (["train", "--model", "lenet", "--data", "EMPTY", "--out", "m.pt"], "argument --model: invalid choice: 'lenet'"),
    (["trace", "import-prosperity", "nofile.pkl", "--name", "x"], "nofile.pkl: file not found"),
])
def test_user_errors_exit_2_with_one_line(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "EMPTY").mkdir()
    rc, out, err = run(capsys, *argv)
    assert rc == 2
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_import_prosperity_command(tmp_path, capsys):
    write_file(tmp_path / "s.pkl")
    rc, out, err = run(capsys, "trace", "import-prosperity", tmp_path / "s.pkl", "--name", "tiny",
                       "--weight-sparsity", "0.8", "--seed", "1", "--out", tmp_path / "w")
    assert rc == 0, err
    assert "conv4" in out and (tmp_path / "w" / "manifest.yaml").is_file()
    rc, out, err = run(capsys, "trace", "import-prosperity", tmp_path / "s.pkl", "--name", "tiny",
                       "--weight-sparsity", "1.5", "--out", tmp_path / "w2")
    assert rc == 2 and "--weight-sparsity" in err


def test_round_recipe_takes_each_round_from_its_own_settings():
    from loas.commands.models import round_recipe

    def settings(rate, epochs):
        t = {"epochs": epochs, "lr": 0.1, "batch_size": 128}
        return {"rounds": 2, "rate": rate, "scope": "global", "rewind_epoch": 1, "dense": dict(t, epochs=5),
                "retrain": t}

    recs = [{"round": 0, "test_acc": 0.9, "settings": {"prune": settings(0.5, 4)}},
            {"round": 1, "test_acc": 0.8, "settings": {"prune": settings(0.5, 4)}},
            {"round": 2, "test_acc": 0.7}]  # made by the branch run, whose settings follow
    rec = round_recipe(settings(0.25, 6), recs, "fashion-mnist")
    assert [(r["rate"], r["epochs"]) for r in rec["rounds"]] == [(None, 5), (0.5, 4), (0.25, 6)]
