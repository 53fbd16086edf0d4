"""The zoo's `loas` variants: LoAS's layer lists, BN/bias, pooling, init; the GEMM layer table; export."""

import numpy as np
import pytest
import torch

from models.checkpoint import build_from_meta, load_model, model_meta, save_model
from models.export import export_workload
from models.layers import SpikeLinear
from models.zoo import VARIANTS, ZOO, build, gemm_layers, gemm_shapes
from sim.trace import load_workload
from test_models_export import lively


def _table_vs_model(arch, variant, **kw):
    model = build(arch, variant=variant, **kw) if arch != "default" else build(arch, **kw)
    hooked = {k.replace(".shortcut.0", ".shortcut").replace(".", "_"): v
              for k, v in gemm_shapes(model, ZOO[arch][1]).items()}
    return model, {l.name: l.mkn for l in gemm_layers(arch, variant, width=kw.get("width"))}, hooked


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("arch, kw", [("vgg16", {}), ("alexnet", {}), ("resnet19", {"width": 8}),
                                      ("default", {"width": 4})])
def test_gemm_table_equals_the_built_network(arch, kw, variant):
    _, table, hooked = _table_vs_model(arch, variant, **kw)
    for name, mkn in table.items():
        if name == "fc1":  # ours' ResNet19 fc1: a conv with a whole-map kernel in the trace
            continue
        assert hooked[name] == mkn, name
    convs = {n for n in hooked if n != "conv1" and not (variant == "ours" and "shortcut" in n)}
    # no conv left out (the encoding conv excluded; ours' shortcuts are residual currents)
    assert convs == {n for n in table if n != "fc1"}


def test_loas_shapes():
    """LoAS's code: AlexNet conv3..5 at 8x8 (M = 64); ResNet19's 19 GEMMs with 3 shortcuts; VGG16."""
    a = {l.name: l.mkn for l in gemm_layers("alexnet", "loas")}
    assert a == {"conv2": (64, 576, 192), "conv3": (64, 1728, 384), "conv4": (64, 3456, 256),
                 "conv5": (64, 2304, 256)}
    assert [l.mkn[0] for l in gemm_layers("alexnet", "ours")][1:] == [16, 16, 16]
    r = gemm_layers("resnet19", "loas")
    assert len(r) == 19
    sc = [(l.name, l.c_in, l.c_out, l.kernel, l.stride, l.H) for l in r if "shortcut" in l.name]
    assert sc == [("blocks_0_shortcut", 64, 128, 1, 2, 32), ("blocks_3_shortcut", 128, 256, 1, 2, 16),
                  ("blocks_6_shortcut", 256, 512, 1, 2, 8)]
    assert r[0].mkn == (256, 576, 128) and r[-1].mkn == (16, 4608, 512)
    v = gemm_layers("vgg16", "loas")
    assert [l.name for l in v] == [f"conv{i}" for i in range(2, 14)]
    assert v[0].mkn == (1024, 576, 64) and [l.mkn[0] for l in v[1:]] == [256] * 2 + [64] * 3 + [16] * 3 + [4] * 3
    with pytest.raises(ValueError, match="variant"):
        gemm_layers("vgg16", "theirs")


def test_loas_variants_bn_bias_init_and_fc():
    torch.manual_seed(0)
    a = build("alexnet", variant="loas")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in a.modules())
    convs = [m for m in a.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.bias is not None and not c.bias.any() for c in convs)
    w = torch.cat([c.weight.flatten() for c in convs])
    assert float(w.detach().std()) == pytest.approx(0.1, rel=0.05)
    assert float(a.stages["fc1"].weight.detach().std()) == pytest.approx(0.1, rel=0.1)
    o = build("alexnet", variant="ours")
    assert all(c.bias is None for c in o.modules() if isinstance(c, torch.nn.Conv2d))
    v = build("vgg16", variant="loas")
    c2 = v.stages["conv2"].op
    assert c2.bias is not None
    assert float(c2.weight.detach().std()) == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.05)  # Kaiming fan_out
    assert float(v.stages["fc1"].weight.detach().std()) == pytest.approx(0.01, rel=0.1)
    r = build("resnet19", width=4, variant="loas")
    assert type(r.fc1) is torch.nn.Linear and r.fc1.bias is not None
    assert not any(isinstance(m, SpikeLinear) for m in r.modules())
    assert isinstance(build("resnet19", width=4, variant="ours").fc1, SpikeLinear)
    with torch.no_grad():
        assert r(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_checkpoints_record_the_variant(tmp_path):
    from sim.errors import UserError

    meta = model_meta("alexnet", dataset="cifar10")
    assert meta["kwargs"]["variant"] == "loas"
    assert "variant" not in model_meta("default", dataset="fashion-mnist")["kwargs"]
    with pytest.raises(UserError, match="--variant: default has one form"):
        model_meta("default", dataset="fashion-mnist", variant="loas")
    m = build_from_meta(meta)
    save_model(m, meta, tmp_path / "a.pt")
    back, ck = load_model(tmp_path / "a.pt")
    assert ck["meta"]["kwargs"]["variant"] == "loas" and "pool2" not in back.stages
    old = {"arch": "alexnet", "kwargs": {"T": 4, "n_mask": 0}, "dataset": "cifar10"}
    assert "pool2" in build_from_meta(old).stages  # a checkpoint without a variant is ours


def test_export_loas_resnet19_writes_the_shortcuts_as_layers(tmp_path):
    torch.manual_seed(0)
    model = lively(build("resnet19", width=4, variant="loas"))
    rep = export_workload(model, torch.randn(2, 3, 32, 32), torch.tensor([1, 2]), tmp_path / "w", name="r")
    names = [r["name"] for r in rep["layers"]]
    assert names == [l.name for l in gemm_layers("resnet19", "loas", width=4)]
    assert all(r["golden"] == "equal" for r in rep["layers"])
    wl = load_workload(tmp_path / "w")
    sc = wl.layer("blocks_3_shortcut")
    g = sc.geometry
    assert (g.kernel, g.stride, g.c_in, g.c_out, g.h) == (1, 2, 8, 16, 16)
    for l, spec in zip(wl.layers(), gemm_layers("resnet19", "loas", width=4)):
        assert (l.geometry.M, l.geometry.K, l.geometry.N) == spec.mkn, spec.name


def test_export_loas_alexnet_folds_the_conv_bias_without_bn(tmp_path):
    torch.manual_seed(0)
    model = build("alexnet", variant="loas").eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.bias.uniform_(0.0, 0.5)
                m.weight.mul_(3.0)
    rep = export_workload(model, torch.randn(1, 3, 32, 32), None, tmp_path / "a", name="a")
    assert [(r["name"], r["M"]) for r in rep["layers"]] == [("conv2", 64), ("conv3", 64), ("conv4", 64),
                                                           ("conv5", 64)]
    wl = load_workload(tmp_path / "a")
    assert any(np.abs(l.bias).max() > 0 for l in wl.layers())
    assert any(l.expected(0).any() for l in wl.layers())  # some spikes, so the bias check means something
