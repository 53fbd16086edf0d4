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
def test_search_json_reproducible(capsys):
    argv = ["nas", "search", "--num-search", "3", "--batch-size", "4", "--batches", "1", "--seed", "3", "--json",
            *TINY]
    rc, out, _ = run(capsys, *argv)
    assert rc == 0
    res = json.loads(out)
    assert len(res["candidates"]) == 3 and res["candidates"][0]["rank"] == 1
    assert parse_cnt_mat(res["best"]).op(0, 3) != 0
    rc, out2, _ = run(capsys, *argv)
    assert json.loads(out2)["candidates"] == res["candidates"]


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
