"""The shipped default workload: checkpoint and traces (skipped until they are generated)."""

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
CKPT = ROOT / "models" / "checkpoints" / "default.pt"
TRACES = ROOT / "traces" / "default"


@pytest.mark.skipif(not CKPT.is_file(), reason=f"{CKPT} not generated yet (loas prune --save)")
def test_shipped_checkpoint():
    from models.checkpoint import load_model
    from models.prune import weight_sparsity

    assert CKPT.stat().st_size < 2 * 2**20
    model, ck = load_model(CKPT)
    assert ck["meta"]["arch"] == "default" and model.T == 4
    rec = ck["record"]
    assert weight_sparsity(model) >= 0.95
    assert rec["weight_sparsity"] >= 0.95
    assert 0.0 < rec["test_acc"] <= 1.0 and "recipe" in rec


@pytest.mark.skipif(not (TRACES / "manifest.yaml").is_file(), reason=f"{TRACES} not exported yet")
def test_shipped_traces_match_golden():
    from sim.golden import run_layer
    from sim.trace import load_workload

    wl = load_workload(TRACES)
    names = wl.layer_names
    assert names[0] == "conv2" and all(n.startswith("conv") for n in names)
    for layer in wl.layers():
        res = run_layer(layer.words(0), layer.weights_kn(), layer.bias, layer.lif, layer.T,
                        n_mask=layer.n_mask)
        assert np.array_equal(res.out_words, layer.expected(0))
    assert sum(p.stat().st_size for p in TRACES.iterdir()) < 5 * 2**20


@pytest.mark.skipif(not CKPT.is_file(), reason="shipped checkpoint not present")
def test_shipped_recipe_is_the_real_per_round_one():
    """The recipe's per-round rates multiply out to the shipped sparsity (the provenance is true)."""
    from models.checkpoint import load_model

    _, ck = load_model(CKPT)
    rounds = ck["record"]["recipe"]["rounds"]
    assert rounds[0]["rate"] is None and all(r["epochs"] >= 1 and r["lr"] > 0 for r in rounds)
    keep = float(np.prod([1 - r["rate"] for r in rounds[1:]]))
    for r in rounds:
        assert r["mask_sparsity"] == pytest.approx(1 - float(np.prod(
            [1 - q["rate"] for q in rounds[1:r["round"] + 1]])), abs=1e-4)
    assert 1 - keep == pytest.approx(ck["record"]["weight_sparsity"], abs=1e-4)
