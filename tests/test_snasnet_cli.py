"""`loas nas search | train | test | export` as a user runs them (in-process: loas.cli.main)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from loas.cli import main
from models.data import FASHION_MNIST_DIR
from models.snasnet import parse_cnt_mat

needs_fmnist = pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
    reason=f"Fashion-MNIST not installed at {FASHION_MNIST_DIR} (Debian package dataset-fashion-mnist)")

TINY = ["--channels", "2", "--T", "2", "--threads", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def cluster():
    """One local Dask cluster (1 worker) for this module's searches, given as LOAS_SCHEDULER."""
    from sim import dist

    with dist.local_cluster(1) as c:
        yield c.scheduler_address


@pytest.fixture
def on_cluster(cluster, monkeypatch):
    from sim import dist

    monkeypatch.setenv(dist.SCHEDULER_ENV, cluster)


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_bad_cnt_mat_is_one_line_exit_2():
    r = subprocess.run([sys.executable, "-m", "loas.cli", "nas", "train", "--cnt-mat", "0302", "0050", "3003",
                        "0000", "--out", "never.pt"], capture_output=True, text=True)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert "--cnt-mat 0302 0050 3003 0000: row 1 column 2: '5' is not an operation code" in lines[0]


@pytest.mark.parametrize("argv, words", [
    (["nas", "export", "--out", "x"], "--checkpoint/--cnt-mat: give exactly one"),
    (["nas", "export", "--cnt-mat", "0001", "0000", "0000", "0000", "--T", "17", "--out", "x", "--dataset",
      "fashion-mnist"], None),
    (["nas", "search", "--num-search", "0"], "--num-search: must be >= 1"),
    (["nas", "search", "--channels", "0"], "--channels: must be >= 1"),
    (["nas", "test", "--checkpoint", "no/such.pt"], "checkpoint not found"),
    (["nas", "search", "--device", "cuda:7", "--num-search", "1"], None),
])
def test_user_errors(capsys, argv, words):
    rc, out, err = run(capsys, *argv)
    if words is None and rc == 0:
        pytest.skip("accepted on this machine (CUDA or data present)")
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("loas: error: ")
    if words:
        assert words in err


@needs_fmnist
def test_search_json_reproducible(capsys, tmp_path, on_cluster):
    argv = ["nas", "search", "--num-search", "3", "--batch-size", "4", "--batches", "1", "--seed", "3", "--json",
            *TINY]
    rc, out, _ = run(capsys, *argv, "--out", tmp_path / "a")
    assert rc == 0
    res = json.loads(out)
    assert len(res["candidates"]) == 3 and res["candidates"][0]["rank"] == 1
    assert parse_cnt_mat(res["best"]).op(0, 3) != 0
    rc, out2, _ = run(capsys, *argv, "--out", tmp_path / "b")  # a fresh store: computed again, the same
    assert json.loads(out2)["candidates"] == res["candidates"] and json.loads(out2)["computed"] == 3
    assert json.loads((tmp_path / "a" / "search.json").read_text())["candidates"] == res["candidates"]


@needs_fmnist
def test_train_test_export_end_to_end(capsys, tmp_path):
    from sim.golden import run_layer
    from sim.trace import load_workload

    ck = tmp_path / "snas.pt"
    rc, out, err = run(capsys, "nas", "train", "--cnt-mat", "0302", "0030", "3003", "0000", "--epochs", "1",
                       "--train-subset", "32", "--test-subset", "16", "--batch-size", "16", "--out", ck, "--json",
                       *TINY)
    assert rc == 0, err
    trained = json.loads(out)
    assert trained["cnt_mat"] == "0302 0030 3003 0000" and 0 <= trained["test_acc"] <= 1
    rc, out, err = run(capsys, "nas", "test", "--checkpoint", ck, "--test-subset", "16", "--json", "--threads", "1")
    assert rc == 0, err
    assert json.loads(out)["test_acc"] == pytest.approx(trained["test_acc"])
    wl_dir = tmp_path / "wl"
    rc, out, err = run(capsys, "nas", "export", "--checkpoint", ck, "--out", wl_dir, "--samples", "2", "--json",
                       "--threads", "1")
    assert rc == 0, err
    rep = json.loads(out)
    assert [c["cell"] for c in rep["cells"]] == ["cell1", "down", "cell2", "fc2"]
    assert all(0 <= c["silent_ratio"] <= 1 for c in rep["cells"])
    wl = load_workload(wl_dir)
    assert wl.T == 2 and "cell1.b20" in wl.layer_names and "cell2.b20" in wl.layer_names
    assert wl.provenance["cnt_mat"] == "0302 0030 3003 0000"
    for layer in wl.layers():
        for s in range(layer.samples):
            res = run_layer(layer.words(s), layer.weights_kn(), layer.bias, layer.lif, layer.T)
            assert np.array_equal(res.out_words, layer.expected(s))
    b20 = wl.layer("cell1.b20").geometry
    assert (b20.kernel, b20.padding, b20.c_in, b20.c_out) == (3, 1, 2, 2)


@needs_fmnist
def test_cnt_mat_spellings_and_test_reports_spikes(capsys, tmp_path):
    ck = tmp_path / "s.pt"
    # the official option name and one quoted string (the form `loas nas search` prints)
    rc, out, err = run(capsys, "nas", "train", "--cnt_mat", "0302 0030 3003 0000", "--epochs", "1",
                       "--train-subset", "16", "--test-subset", "8", "--batch-size", "8", "--out", ck, "--json", *TINY)
    assert rc == 0, err
    assert json.loads(out)["cnt_mat"] == "0302 0030 3003 0000"
    rc, out, err = run(capsys, "nas", "test", "--checkpoint", ck, "--test-subset", "8", "--json", "--threads", "1")
    assert rc == 0, err
    rep = json.loads(out)
    names = [r["layer"] for r in rep["layers"]]
    assert "cell1.ops.f01.lif" in names and "fc1_lif" in names and "cell2.ops.b20.lif" in names
    for r in rep["layers"]:
        assert 0 <= r["firing_rate"] <= 1 and r["spikes_per_image"] >= 0 and r["neurons"] > 0
    assert rep["spikes_per_image"] == pytest.approx(sum(r["spikes_per_image"] for r in rep["layers"]))
    assert next(r for r in rep["layers"] if r["layer"] == "fc1_lif")["neurons"] == 1024
    rc, out, err = run(capsys, "nas", "test", "--checkpoint", ck, "--test-subset", "8", "--threads", "1")
    assert rc == 0 and "spikes/image" in out and "cell1.ops.f01.lif" in out


@needs_fmnist
def test_hw_objective_pareto_front_and_png(capsys, tmp_path, on_cluster):
    png = tmp_path / "front.png"
    argv = ["nas", "search", "--objective", "hw", "--num-search", "4", "--batch-size", "4", "--batches", "1",
            "--max-cycles", "10000000", "--json", "--out", tmp_path / "r", *TINY]
    rc, out, err = run(capsys, *argv, "--png", png)
    assert rc == 0, err
    res = json.loads(out)
    front = res["pareto_front"]
    assert front and png.stat().st_size > 1000
    cands = res["candidates"]
    for c in cands:
        assert c["loas_cycles"] > 0 and c["sparten_cycles"] > 0 and c["loas_energy_pj"] > 0
    for f in front:  # nobody dominates a front member
        assert not any(c["score"] > f["score"] and c["loas_cycles"] < f["loas_cycles"] for c in cands)
    best = res["best_under_budget"]
    assert best["score"] == max(c["score"] for c in cands if c["loas_cycles"] <= 10_000_000)
    rc, out, err = run(capsys, *argv)  # from the store (per-layer cycles included), PNG under --out
    again = json.loads(out)
    assert again["cached"] == 4 and again["candidates"] == cands and again["pareto_front"] == front
    assert (tmp_path / "r" / "pareto.png").stat().st_size > 1000
    rc, out, err = run(capsys, "nas", "search", "--max-cycles", "5", "--num-search", "1", *TINY)
    assert rc == 2 and "--max-cycles: needs --objective hw" in err


@needs_fmnist
def test_train_learns_from_the_start(capsys, tmp_path):
    """The fc1 warm-up lets a narrow official-init network learn (without it fc1's LIF is silent)."""
    argv = ["nas", "train", "--cnt-mat", "0302 0030 3003 0000", "--epochs", "3", "--train-subset", "256",
            "--test-subset", "8", "--batch-size", "32", "--json", "--channels", "4", "--T", "2", "--threads", "1",
            "--device", "cpu"]
    rc, out, err = run(capsys, *argv, "--out", tmp_path / "a.pt")
    assert rc == 0, err
    loss = [h["loss"] for h in json.loads(out)["history"]]
    assert loss[-1] < loss[0] - 0.03, loss
    rc, out, err = run(capsys, *argv, "--out", tmp_path / "b.pt", "--no-fc1-warmup")
    silent = [h["loss"] for h in json.loads(out)["history"]]
    assert abs(silent[-1] - silent[0]) < 0.01, silent  # the silent start the warm-up fixes


def test_calibrate_fc1_makes_the_classifier_lif_fire():
    import torch

    from models.snasnet import build_snasnet, calibrate_fc1

    torch.manual_seed(0)
    net = build_snasnet("0302 0030 3003 0000", "fashion-mnist", channels=2, T=2)
    x = torch.randn(16, 1, 28, 28)
    spikes = []
    h = net.fc1_lif.register_forward_hook(lambda m, i, o: spikes.append(float(o.sum())))
    with torch.no_grad():
        net(x)
        before = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
        factor = calibrate_fc1(net, x)
        assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
        net(x)
    h.remove()
    assert spikes[0] == 0 and spikes[-1] > 0 and factor > 10
