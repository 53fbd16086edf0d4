"""Integer inference mode and export: bit exactness against the golden model; compact checkpoints."""

import numpy as np
import pytest
import torch

from models.checkpoint import load_model, model_meta, save_model
from models.export import export_workload, integer_layer_forward, pack_words
from models.layers import SpikeConv, integer_lif, spike_layers
from models.zoo import default_net
from sim.errors import UserError
from sim.golden import LIFParams, plif, run_layer
from sim.trace import Layer, load_workload




def lively(model, seed=0):
    """Random BN statistics and pruned weights so that every layer fires sometimes."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) * 2 + 0.5)
            m.bias.data.copy_(torch.rand(c, generator=g) * 0.8)
        if isinstance(m, torch.nn.Conv2d):
            m.weight.data.mul_((torch.rand(m.weight.shape, generator=g) > 0.6).float())
    model.eval()
    return model


def test_integer_lif_equals_golden_plif():
    g = torch.Generator().manual_seed(1)
    O = torch.randint(-300, 300, (4, 50, 7), generator=g)
    ours = pack_words(integer_lif(O, 100))
    words, _ = plif(O.numpy(), LIFParams(100, 2))
    assert np.array_equal(ours, words)


@pytest.mark.parametrize("n_mask", [0, 1, 2])
def test_export_is_bit_exact_with_golden(tmp_path, n_mask):
    torch.manual_seed(n_mask)
    model = lively(default_net(width=3, n_mask=n_mask), seed=n_mask)
    images = torch.randn(3, 1, 28, 28)
    rep = export_workload(model, images, torch.tensor([0, 1, 2]), tmp_path / "w", name="tiny")
    wl = load_workload(tmp_path / "w")
    assert wl.T == 4 and [e["name"] for e in rep["layers"]] == ["conv2", "conv3", "conv4", "conv5"]
    spikes_seen = 0
    for entry in rep["layers"]:
        layer = Layer(tmp_path / "w" / f"{entry['name']}.npz", T=4)
        assert layer.n_mask == n_mask
        for s in range(3):
            res = run_layer(layer.words(s), layer.weights_kn(), layer.bias, layer.lif, 4, n_mask=n_mask)
            assert np.array_equal(res.out_words, layer.expected(s))
            spikes_seen += int(np.bitwise_count(res.out_words).sum())
        if n_mask:
            counts = np.bitwise_count(layer.expected_out_words)
            assert not ((counts >= 1) & (counts <= n_mask)).any()
    assert spikes_seen > 0
    # the chain is consistent: the output of conv2 is the input of conv3 (no pool between them)
    c2 = Layer(tmp_path / "w" / "conv2.npz", T=4)
    c3 = Layer(tmp_path / "w" / "conv3.npz", T=4)
    assert np.array_equal(c2.expected(0).reshape(14, 14, -1).transpose(2, 0, 1), c3.spike_words[0])
    for e in rep["layers"]:
        assert 0.0 <= e["agreement_layerwise"] <= 1.0


def test_torch_integer_mode_matches_golden_per_layer():
    torch.manual_seed(3)
    layer = SpikeConv(5, 6, 3, 2, 1, n_mask=1)
    layer.T = 4
    lively(layer, seed=3)
    x = (torch.rand(4, 2, 5, 9, 9) > 0.7).float()
    y = integer_layer_forward(layer, x)
    q = layer.quant
    from sim.trace import Geometry, im2col

    geo = Geometry(c_in=5, h=9, w=9, kernel=3, stride=2, padding=1, c_out=6)
    words = pack_words(x)
    for b in range(2):
        res = run_layer(im2col(words[b], geo), np.ascontiguousarray(q.weight.numpy().reshape(6, -1).T),
                        q.bias.numpy(), LIFParams(q.threshold, 2), 4, n_mask=1)
        ours = pack_words(y[:, b]).transpose(1, 2, 0).reshape(-1, 6)
        assert np.array_equal(ours, res.out_words)


def test_float_and_integer_models_agree_closely():
    torch.manual_seed(0)
    layer = lively(SpikeConv(8, 8), seed=5)
    layer.T = 4
    x = (torch.rand(4, 4, 8, 6, 6) > 0.5).float()
    with torch.no_grad():
        yf = layer(x)
    yi = integer_layer_forward(layer, x)
    assert (yf == yi).float().mean() > 0.98


def test_quantisation_keeps_pruned_weights_zero():
    layer = lively(SpikeConv(4, 4), seed=2)
    q = layer.quantize()
    assert q.weight.dtype == torch.int8
    assert ((layer.op.weight == 0) <= (q.weight == 0)).all()
    assert q.weight.abs().max() == 127 and q.threshold >= 1


def test_compact_checkpoint_round_trip(tmp_path):
    model = lively(default_net(width=3), seed=4)
    meta = model_meta("default", dataset="fashion-mnist", width=3)
    save_model(model, meta, tmp_path / "m.pt", record={"test_acc": 0.5})
    loaded, ck = load_model(tmp_path / "m.pt", n_mask=1)
    assert loaded.n_mask == 1 and ck["record"]["test_acc"] == 0.5
    for (n, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), n
    with pytest.raises(UserError, match="not found"):
        load_model(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"junk")
    with pytest.raises(UserError, match="not a loadable checkpoint"):
        load_model(tmp_path / "bad.pt")


def test_spike_layers_order():
    names = [n for n, _ in spike_layers(default_net(width=2))]
    assert names == [f"stages.conv{i}" for i in range(1, 6)]


def test_integer_current_is_exact_at_the_largest_vgg16_k():
    """The float32 fast path of the integer mode: K = 512 * 9 with |w| = 127, dense spikes."""
    from models.layers import QuantParams

    g = torch.Generator().manual_seed(7)
    layer = SpikeConv(512, 4)
    layer.T = 1
    w = (torch.randint(0, 2, (4, 512, 3, 3), generator=g) * 254 - 127).to(torch.int8)
    w[0] = 127  # one output channel at the largest possible sum, 512 * 9 * 127 = 585216
    layer.quant = QuantParams(w, torch.tensor([5, -3, 0, 2**30]), 10**9, 1.0)
    x = (torch.rand(1, 2, 512, 4, 4, generator=g) > 0.1).float()
    x[:, 0] = 1.0
    ours = layer._int_current(x)
    assert ours.dtype == torch.int64
    cols = torch.nn.functional.unfold(x[0], 3, padding=1).to(torch.int64)  # (B, K, H*W)
    ref = (w.reshape(4, -1).to(torch.int64) @ cols).reshape(2, 4, 4, 4) + layer.quant.bias.reshape(1, -1, 1, 1)
    assert torch.equal(ours[0], ref)
    assert int(ours[0, 0, 0].max()) == 585216 + 5


def test_golden_check_names_the_disagreeing_sample(tmp_path):
    from models.export import golden_check
    from sim.synthetic import random_layer
    from sim.trace import Geometry, write_and_load_layer

    kw = random_layer(np.random.default_rng(2), Geometry(3, 6, 6, 3, 2, 1, 5), 4, samples=3)
    golden_check(write_and_load_layer(tmp_path / "ok.npz", **kw))
    kw["expected_out_words"] = kw["expected_out_words"].copy()
    kw["expected_out_words"][2, 1, 3] ^= 1
    with pytest.raises(RuntimeError, match=r"bad.npz: sample 2: .* disagree on 1 output words"):
        golden_check(write_and_load_layer(tmp_path / "bad.npz", **kw))


def test_export_runs_with_its_own_thread_count_and_restores_torch(tmp_path):
    before = torch.get_num_threads()
    model = lively(default_net(width=2), seed=1)
    export_workload(model, torch.randn(1, 1, 28, 28), None, tmp_path / "w", name="t", threads=1)
    assert torch.get_num_threads() == before
    with pytest.raises(UserError, match="--threads: must be a positive int, got 0"):
        export_workload(model, torch.randn(1, 1, 28, 28), None, tmp_path / "w", name="t", threads=0)
    assert torch.get_num_threads() == before
