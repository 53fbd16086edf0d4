"""The `loas` command line as a user runs it: exit codes, one-line errors, JSON output."""

import json

import numpy as np
import pytest
from conftest import loas

from sim.golden import run_layer
from sim.synthetic import write_random_workload
from sim.trace import Geometry, load_workload




@pytest.fixture(scope="module")
def wl(tmp_path_factory):
    return write_random_workload(tmp_path_factory.mktemp("w") / "small",
                                 {"conv2": Geometry(8, 8, 8, 3, 1, 1, 16), "conv3": Geometry(16, 8, 8, 3, 1, 1, 16)},
                                 T=4, seed=7)


def test_help_lists_commands():
    r = loas("--help")
    assert r.returncode == 0 and "trace" in r.stdout and "golden" in r.stdout
    assert loas("trace", "stats", "--help").returncode == 0


def test_trace_stats_json(wl):
    r = loas("trace", "stats", wl, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [l["layer"] for l in out["layers"]] == ["conv2", "conv3"]
    l2 = out["layers"][0]
    assert (l2["T"], l2["M"], l2["K"], l2["N"]) == (4, 64, 72, 16)
    layer = load_workload(wl).layer("conv2")
    assert l2["silent_ratio"] == pytest.approx(float((layer.spike_words[0] == 0).mean()))
    assert l2["weight_sparsity"] == pytest.approx(float((layer.weight == 0).mean()))
    assert 0 < out["total"]["weight_sparsity"] < 1
    words = layer.words(0)  # Table II basis: the im2col words, padding included
    assert l2["table2"]["silent_ratio"] == pytest.approx(float((words == 0).mean()))
    assert l2["table2"]["silent_ratio_strong"] == pytest.approx(float((np.bitwise_count(words) <= 1).mean()))
    t2 = [l["table2_counts"] for l in out["layers"]]
    assert out["total"]["table2"]["silent_ratio"] == pytest.approx(sum(c["silent"] for c in t2) /
                                                                   sum(c["elements"] for c in t2))
    r = loas("trace", "stats", wl)
    assert r.returncode == 0 and "conv3" in r.stdout and "network" in r.stdout
    assert "feature map" in r.stdout and "Table II" in r.stdout


def test_golden_json(wl):
    r = loas("golden", wl, "--layer", "conv3", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    layer = load_workload(wl).layer("conv3")
    res = run_layer(layer.words(0), layer.weights_kn(), layer.bias, layer.lif, 4)
    assert out["effectual_ops"] == res.stats.effectual_ops > 0
    assert out["output_spikes"] == res.stats.output_spikes
    assert out["output_sha256"] == res.digest() and out["matches_expected"] is True
    assert loas("trace", "verify", wl).returncode == 0


@pytest.mark.parametrize("args, needle", [
    (["golden", "{wl}", "--layer", "conv9"], "no layer 'conv9'; this workload has conv2, conv3"),
    (["trace", "stats", "no-such-workload"], "no-such-workload: field 'workload'"),
    (["golden", "{wl}", "--layer", "conv2", "--sample", "3"], "field 'sample': 3 out of range"),
])
def test_user_errors_are_one_line_exit_2(wl, args, needle):
    r = loas(*[a.format(wl=wl) for a in args])
    assert r.returncode == 2
    assert needle in r.stderr and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_corrupt_layer_is_one_line(wl, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(wl, bad)
    (bad / "conv2.npz").write_bytes(b"garbage")
    r = loas("golden", bad, "--layer", "conv2")
    assert r.returncode == 2 and "conv2.npz: field 'npz'" in r.stderr and "Traceback" not in r.stderr


def test_usage_error_exit_2():
    r = loas("golden")
    assert r.returncode == 2 and "usage" in r.stderr
