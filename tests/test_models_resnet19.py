"""ResNet19: integer mode with residual currents, export bit-exact with the golden model, CLI."""

import json

import numpy as np
import pytest
import torch

from loas.cli import main
from models.checkpoint import load_model, model_meta, save_model
from models.export import export_workload
from models.zoo import BasicBlock, build
from sim.golden import run_layer
from sim.trace import load_workload
from test_models_data import write_cifar_batch


def lively(model, seed=0):
    """Random BN statistics and 60 %-pruned weights so that every layer fires sometimes."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) * 2 + 0.5)
            m.bias.data.copy_(torch.rand(c, generator=g) * 0.8)
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            m.weight.data.mul_((torch.rand(m.weight.shape, generator=g) > 0.6).float())
    return model.eval()


def tiny(n_mask=0, seed=0):
    torch.manual_seed(seed)
    return lively(build("resnet19", width=4, n_mask=n_mask, variant="ours"), seed)


NAMES = [f"blocks_{b}_conv{i}" for b in range(8) for i in (1, 2)] + ["fc1"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("r19") / "w"
    model = tiny()
    rep = export_workload(model, torch.randn(2, 3, 32, 32), torch.tensor([1, 2]), out, name="r19")
    return model, rep, load_workload(out)


def test_width_keeps_the_loas_shapes_and_default():
    full = build("resnet19", variant="ours")
    assert full.conv1.op.out_channels == 64 and full.fc1.op.in_features == 512
    assert full.fc1.op.out_features == 256 and full.fc1.pool == 16
    assert [b.conv2.op.out_channels for b in full.blocks] == [128] * 3 + [256] * 3 + [512] * 2
    small = build("resnet19", width=4, variant="ours")
    assert [b.shortcut is not None for b in small.blocks] == [True, False, False] * 2 + [True, False]
    with pytest.raises(ValueError, match="width"):
        build("resnet19", width=0)


def test_export_is_bit_exact_with_golden_including_residuals(exported):
    _, rep, wl = exported
    assert wl.layer_names == NAMES
    shortcut = {r["name"]: r["residual"] for r in rep["layers"]}
    assert shortcut["blocks_0_conv2"] == "conv" and shortcut["blocks_1_conv2"] == "identity"
    assert shortcut["blocks_3_conv2"] == "conv" and shortcut["blocks_0_conv1"] is None
    for layer in wl.layers():
        has = layer.name.endswith("conv2")
        assert (layer.residual is not None) == has, layer.name
        assert int(np.bitwise_count(layer.expected_out_words).sum()) > 0, layer.name  # not all silent
        for s in range(2):
            res = run_layer(layer.words(s), layer.weights_kn(), layer.bias, layer.lif, layer.T,
                            n_mask=layer.n_mask, residual=layer.residual_current(s))
            np.testing.assert_array_equal(res.out_words, layer.expected(s), err_msg=layer.name)
        if has:  # the residual changes the outputs: without it the golden model disagrees
            plain = run_layer(layer.words(0), layer.weights_kn(), layer.bias, layer.lif, layer.T,
                              n_mask=layer.n_mask)
            assert (plain.out_words != layer.expected(0)).any(), layer.name
    # the integer chain runs through the blocks: a block's output is the next block's input
    out0 = wl.layer("blocks_0_conv2").expected(1)
    g = wl.layer("blocks_1_conv1").geometry
    np.testing.assert_array_equal(out0.reshape(g.h, g.w, -1).transpose(2, 0, 1),
                                  wl.layer("blocks_1_conv1").spike_words[1])


def test_identity_residual_is_the_block_input_times_an_integer_gain(exported):
    model, _, wl = exported
    block = model.blocks[1]
    block.quantize()
    conv2 = wl.layer("blocks_1_conv2")
    assert conv2.lif.threshold == block.conv2.quant.threshold
    # block input = input of blocks_1_conv1, (C, H, W) words -> bits per t in (M, N) order
    words = wl.layer("blocks_1_conv1").spike_words[0]
    bits = np.stack([(words >> t) & 1 for t in range(4)]).transpose(0, 2, 3, 1).reshape(4, -1, words.shape[0])
    np.testing.assert_array_equal(conv2.residual_current(0), bits.astype(np.int32) * block.res_gain)
    # gain = round(0.75 / s): the shortcut spike enters the LIF like a weight of 0.75 in float units
    assert block.res_gain == round(0.75 / block.conv2.quant.scale)


def test_block_quantises_conv2_and_shortcut_with_one_scale():
    block = lively(BasicBlock(3, 5, 2, 0), 1)
    q = block.quantize()
    assert block.res_weight.dtype == torch.int8 and block.res_bias.dtype == torch.int64
    # one of the two weight sets reaches 127, neither exceeds it
    top = max(int(q.weight.abs().max()), int(block.res_weight.abs().max()))
    assert top == 127
    w_sc, _ = block._folded_shortcut()
    np.testing.assert_array_equal(block.res_weight.numpy(),
                                  torch.round(w_sc / q.scale).to(torch.int8).numpy())
    assert ((block.shortcut[0].weight == 0) <= (block.res_weight == 0)).all()  # pruned stays zero


def test_float_and_integer_resnet19_agree_closely(exported):
    _, rep, _ = exported
    for r in rep["layers"]:
        assert r["agreement_layerwise"] > 0.95, r


def test_fc1_is_a_conv_over_the_whole_spike_map(exported):
    model, _, wl = exported
    fc1 = wl.layer("fc1")
    g = fc1.geometry
    assert (g.c_in, g.h, g.w, g.kernel, g.c_out, g.M) == (32, 4, 4, 4, 16, 1)
    # one int8 weight per (n, c), repeated over the map: the 1/16 of the average is in the weight
    np.testing.assert_array_equal(fc1.weight, np.broadcast_to(fc1.weight[:, :, :1, :1], fc1.weight.shape))
    np.testing.assert_array_equal(fc1.weight[:, :, 0, 0], model.fc1.quant.weight.numpy())


def test_integer_mode_refuses_a_float_residual():
    model = tiny()
    model.set_integer(True)
    x = (torch.rand(4, 1, 8, 16, 16) > 0.5).float()
    with pytest.raises(TypeError, match="int64"):
        model.blocks[1].conv2(x, residual=x)


def test_export_command_and_trace_verify_on_resnet19(tmp_path, capsys):
    data = tmp_path / "cifar"
    data.mkdir()
    write_cifar_batch(data / "test_batch", 3, seed=1)
    model = tiny(n_mask=1)
    meta = model_meta("resnet19", dataset="cifar10", n_mask=1, width=4, variant="ours")
    assert meta["kwargs"]["width"] == 4
    save_model(model, meta, tmp_path / "r.pt")
    assert load_model(tmp_path / "r.pt")[0].blocks[0].conv2.op.out_channels == 8
    rc = main(["export", "--checkpoint", str(tmp_path / "r.pt"), "--data", str(data), "--samples", "2",
               "--check-samples", "3", "--out", str(tmp_path / "wl"), "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    rep = json.loads(out)
    assert [r["name"] for r in rep["layers"]] == NAMES and all(r["golden"] == "equal" for r in rep["layers"])
    assert rep["float_vs_integer"]["samples"] == 3
    rc = main(["trace", "verify", str(tmp_path / "wl"), "--json"])
    out, err = capsys.readouterr()
    assert rc == 0 and json.loads(out)["match"], err
    rc = main(["golden", str(tmp_path / "wl"), "--layer", "blocks_3_conv2", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0 and json.loads(out)["matches_expected"]


def test_rtl_sim_refuses_a_layer_with_residual(exported, capsys):
    from hw.cosim import simulator_available

    if not simulator_available("verilator"):
        pytest.skip("verilator is not installed")  # the simulator is checked before the layer
    _, _, wl = exported
    rc = main(["rtl", "sim", str(wl.path), "--layer", "blocks_1_conv2"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "blocks_1_conv2" in err and "'residual'" in err and len(err.strip().splitlines()) == 1


def test_width_is_refused_for_fixed_width_networks():
    from sim.errors import UserError

    with pytest.raises(UserError, match="--width: vgg16 has a fixed width"):
        model_meta("vgg16", dataset="cifar10", width=8)
    assert "width" not in model_meta("resnet19", dataset="cifar10")["kwargs"]
    assert model_meta("default", dataset="fashion-mnist")["kwargs"]["width"] == 16
