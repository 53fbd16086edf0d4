"""Killed runs: `loas train` and `loas prune` as real subprocesses, killed with SIGKILL or SIGINT at
a random point after their first checkpoint, resume and end with what an uninterrupted run gives
(they lose at most the epoch in flight)."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from loas.cli import main
from test_models_data import make_fmnist

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def fm(tmp_path_factory):
    root = tmp_path_factory.mktemp("fm")
    make_fmnist(root, 48, "train")
    make_fmnist(root, 8, "test")
    return root


def _cmd(*argv):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "loas.cli", *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _kill_after(proc, marker: Path, sig, rng, timeout=240):
    t0 = time.time()
    while not marker.exists():
        if proc.poll() is not None or time.time() - t0 > timeout:
            proc.kill()
            pytest.fail(f"the run ended before {marker.name} appeared: {proc.communicate()[1][-2000:]}")
        time.sleep(0.05)
    time.sleep(rng.uniform(0, 0.1))
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err, err[-3000:]
    return proc.returncode


def _train_args(fm):
    return ["--data", fm, "--width", "2", "--epochs", "4", "--batch-size", "8", "--threads", "1"]


@pytest.fixture(scope="module")
def ref(fm, tmp_path_factory):
    ref = tmp_path_factory.mktemp("ref") / "ref.pt"
    assert main([str(a) for a in ["train", *_train_args(fm), "--out", ref]]) == 0
    return ref


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_train_killed_resumes_to_the_same_weights(fm, ref, tmp_path, sig):
    common = _train_args(fm)
    out = tmp_path / "m.pt"
    rc = _kill_after(_cmd("train", *common, "--out", out), out.with_name("m.pt.state"), sig, random.Random(int(sig)))
    # 130: interrupted and said so; -SIGKILL; 0 or -SIGINT: the run had ended (the signal met the exit)
    finished = out.exists()
    assert rc in (-signal.SIGKILL, 130) or finished and rc in (0, -signal.SIGINT), rc
    if sig != signal.SIGKILL:  # a SIGKILL mid-write leaves its temp file: nothing runs after that signal
        assert not list(tmp_path.glob(".*.tmp*")), "an interrupted run left a temp file behind"
    p = _cmd("train", *common, "--out", out)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert finished or "resuming" in err
    assert not list(tmp_path.glob(".*.tmp*")), "the resumed run left a dead run's temp file behind"
    a, b = torch.load(ref, weights_only=True), torch.load(out, weights_only=True)
    for k in a["dense"]:
        assert torch.equal(a["dense"][k], b["dense"][k]), k
    for k in a["sparse"]:
        assert torch.equal(a["sparse"][k]["values"], b["sparse"][k]["values"]), k


@pytest.mark.slow
def test_prune_killed_resumes(fm, tmp_path):
    common = ["--data", fm, "--width", "2", "--epochs", "2", "--batch-size", "16", "--rounds", "2", "--rate", "0.5",
              "--threads", "1", "--json"]
    run = tmp_path / "run"
    rc = _kill_after(_cmd("prune", *common, "--out", run), run / "round_00.pt", signal.SIGKILL, random.Random(3))
    assert rc in (-signal.SIGKILL, 0)
    p = _cmd("prune", *common, "--out", run)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    assert "round 0/" not in err  # the finished dense round was kept, not retrained
    import json

    rounds = json.loads(out)["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert rounds[2]["mask_sparsity"] == pytest.approx(0.75, abs=0.01)
