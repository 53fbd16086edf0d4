"""SNASNet against the official code: the search score's formula, the sampler, the network details,
and spikingjelly 2.0's own ``snas_net.SNASNet`` (same weights -> same outputs)."""

import argparse
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from spikingjelly.activation_based import functional, neuron

from models.snasnet import (
    PUBLISHED,
    CellMatrix,
    build_snasnet,
    from_reference_state_dict,
    parse_cnt_mat,
    prune_cut_off,
    sample_cell,
    snasnet_from_config,
)
from models.snasnet_search import score_model
from sim.errors import UserError

torch.set_num_threads(1)


def official_score(model, x):
    """The official ``find_best_neuroncell`` kernel, written out from model_snn.py: a hook on every
    LIF per timestep, K_total = N - 0.5 / (norm_K + 1e-3) * (K0_1 + K1_0), logdet(K / num_actfun)."""
    K = np.zeros((x.shape[0], x.shape[0]))
    count = [0]

    def hook(module, inp, out):
        steps = out if module.step_mode == "m" else out.unsqueeze(0)
        for o in steps:
            o = o.reshape(o.shape[0], -1).double()
            n = o.shape[1]
            xb = (o > 0).double()
            full = torch.ones(xb.shape[0], xb.shape[0], dtype=torch.float64) * n
            sparsity = (xb.sum(1) / n).unsqueeze(1)
            norm_k = sparsity @ (1 - sparsity.t()) + (1 - sparsity) @ sparsity.t()
            rescale = 0.5 / (norm_k + 1e-3)
            k_total = full - rescale * (xb @ (1 - xb.t()) + (1 - xb) @ xb.t())
            K[:] += k_total.numpy()
            count[0] += 1

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, neuron.LIFNode)]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return np.linalg.slogdet(K / count[0])[1], count[0]


def lively(net):
    """Raise activity so that every LIF has some spikes (an all-silent network is a weak check)."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 1.5 - 0.3)
        net.fc1.weight.mul_(60)
    return net


@pytest.mark.parametrize("cnt_mat", [PUBLISHED["cifar100"], "0303 0030 0002 0200", "0302 0030 0003 0000"])
def test_score_is_the_official_formula(cnt_mat):
    torch.manual_seed(2)
    net = lively(build_snasnet(cnt_mat, "fashion-mnist", channels=3, T=3))
    x = torch.randn(7, 1, 28, 28)
    net.train()
    net.dropout.eval()
    expected, terms = official_score(net, x)
    lifs = sum(isinstance(m, neuron.LIFNode) for m in net.modules())
    assert terms == lifs * 3  # one term per LIF and timestep: the division the score must apply
    net.eval()
    got = score_model(net, [x], dropout=False)
    assert math.isfinite(expected) and got == pytest.approx(expected, rel=1e-9, abs=1e-9)
    # without the division the value would be off by B * ln(terms)
    assert abs(got - (expected + 7 * math.log(terms))) > 1.0
    # mean over batches
    x2 = torch.randn(7, 1, 28, 28)
    net.train()
    net.dropout.eval()
    e2, _ = official_score(net, x2)
    assert score_model(net, [x, x2], dropout=False) == pytest.approx((expected + e2) / 2, rel=1e-9)


def test_score_leaves_model_state_untouched():
    torch.manual_seed(4)
    net = lively(build_snasnet(PUBLISHED["cifar10"], "fashion-mnist", channels=2, T=2))
    net.eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = [torch.randn(6, 1, 28, 28)]
    rng = torch.get_rng_state()
    s1 = score_model(net, x)  # dropout on, as the official search: masks drawn from its own seed
    assert torch.equal(torch.get_rng_state(), rng)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running statistics included
    assert not any(m.training for m in net.modules())
    assert score_model(net, x) == s1 and score_model(net, x, seed=1) != s1
    assert net.dropout.mask is None and all(  # memories reset
        not isinstance(m.v, torch.Tensor) for m in net.modules() if isinstance(m, neuron.LIFNode))


def test_official_sampler_prunes_instead_of_redrawing():
    # node 2 has edges but no path from node 0: the official sampler removes it, the cell stays
    rows = [[0, 3, 0, 1], [0, 0, 0, 3], [0, 2, 0, 0], [0, 0, 0, 0]]
    assert prune_cut_off(rows) == [[0, 3, 0, 1], [0, 0, 0, 3], [0, 0, 0, 0], [0, 0, 0, 0]]
    # 1 -> 2 -> 0 (backward) -> 3: node 1 and 2 reach node 3 through node 0, and 0 -> 1 reaches them
    rows = [[0, 2, 0, 1], [0, 0, 3, 0], [3, 0, 0, 0], [0, 0, 0, 0]]
    assert prune_cut_off(rows) == rows
    rng = np.random.default_rng(0)
    off = [sample_cell(rng, "official") for _ in range(3000)]
    red = [sample_cell(rng, "redraw") for _ in range(3000)]
    fwd = [sample_cell(rng, "official", "forward") for _ in range(500)]
    mean_edges = lambda cells: np.mean([len(c.edges()) for c in cells])  # noqa: E731
    assert 2.8 < mean_edges(off) < 3.4 and 5.1 < mean_edges(red) < 5.8  # 3.09 and 5.43 in 20 000
    assert len({c.rows for c in off}) < len({c.rows for c in red})
    assert all(not c.backward_edges() for c in fwd) and any(c.backward_edges() for c in off)
    with pytest.raises(ValueError, match="sampler"):
        sample_cell(rng, "other")


@torch.no_grad()
def test_official_network_details():
    torch.manual_seed(0)
    net = build_snasnet(PUBLISHED["cifar100"], "fashion-mnist", channels=4, T=4)
    assert net.fc1.bias is None and net.fc2.bias is not None and float(net.fc2.bias.abs().max()) == 0
    assert float(net.fc1.weight.std()) == pytest.approx(0.01, rel=0.05)
    w = net.cell1.ops["f01"].conv.weight
    bound = math.sqrt(6 / ((1 + 2 ** 2) * w[0].numel()))  # kaiming_uniform a = 2
    assert float(w.abs().max()) <= bound and float(w.abs().max()) > 0.9 * bound
    legacy = build_snasnet(PUBLISHED["cifar100"], "fashion-mnist", channels=4, T=4, fc1_bias=True, init="torch",
                           dropout="timestep", bn_stats="folded")
    assert legacy.fc1.bias is not None and float(legacy.fc1.weight.std()) > 0.02
    # one dropout mask per sample for all T (spikingjelly layer.Dropout), a new one per step otherwise
    seen = []
    for m in (net, legacy):
        m.train()
        h = m.fc1.register_forward_pre_hook(lambda mod, inp: seen.append(inp[0].detach()))
        m(torch.randn(3, 1, 28, 28))
        h.remove()
    with torch.no_grad():
        ones = torch.ones(4, 3, 10)
        net.dropout.reset()
        masks = net.dropout(ones)
        assert all(torch.equal(masks[0], masks[t]) for t in range(4)) and (masks == 0).any()
        legacy_masks = torch.nn.functional.dropout(ones, 0.5, True)
        assert not all(torch.equal(legacy_masks[0], legacy_masks[t]) for t in range(4))
    # per-timestep BN statistics in train mode: each timestep of down_bn's output is normalised alone
    out = []
    h = net.down_bn.register_forward_hook(lambda mod, inp, o: out.append(o.detach()))
    net(torch.randn(5, 1, 28, 28))
    h.remove()
    assert len(out) == 4  # called once per timestep
    for o in out:
        assert o.mean((0, 2, 3)).abs().max() < 1e-5
    # a network saved before the options existed keeps its behaviour
    cfg = {k: v for k, v in legacy.config.items() if k not in ("fc1_bias", "init", "dropout", "bn_stats")}
    old = snasnet_from_config(cfg)
    assert old.fc1.bias is not None and old.config["bn_stats"] == "folded" and old.config["dropout"] == "timestep"


def spikingjelly_snasnet():
    """spikingjelly 2.0's ``activation_based/model/snas_net.py``, loaded from its file: the package
    ``model/__init__`` imports every model (spikformer needs h5py, not installed here)."""
    import spikingjelly.activation_based as sja

    path = Path(sja.__file__).parent / "model" / "snas_net.py"
    spec = importlib.util.spec_from_file_location("spikingjelly.activation_based.model.snas_net", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.SNASNet


@pytest.mark.parametrize("cnt_mat", [PUBLISHED["cifar100"], "0303 0030 0002 0200", "0302 0030 0003 0000"])
def test_spikingjelly_state_dict_loads_and_computes_the_same(cnt_mat):
    SJ = spikingjelly_snasnet()
    m = parse_cnt_mat(cnt_mat)
    args = argparse.Namespace(timestep=2, second_avgpooling=2, dataset="cifar100", celltype="backward",
                              threshold=1.0, tau=4.0 / 3.0)
    torch.manual_seed(0)
    ref = SJ(args, torch.tensor(m.rows))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # activity everywhere, so that a wrong edge shows
        for mod in ref.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.bias.copy_(torch.rand(mod.bias.shape, generator=g) * 1.5 - 0.5)
                mod.running_var.uniform_(0.5, 2.0, generator=g)
        ref.classifier[1].weight.mul_(40)
        ref.classifier[3].weight.mul_(100)
    state = {"state_dict": {"module." + k: v for k, v in ref.state_dict().items()}}  # DataParallel wrapper
    ours = from_reference_state_dict(state, m, "cifar100", T=2)
    assert ours.config["channels"] == 128 and ours.fc1.bias is None and ours.config["second_avgpooling"] == 2
    ref.double()
    ours.double()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    for train in (False, True):  # train: per-timestep BN batch statistics, as the reference
        ref.train(train)
        ours.train(train)
        ref.classifier[0].eval()
        ours.dropout.eval()
        with torch.no_grad():
            functional.reset_net(ref)
            a, b = ref(x), ours(x)
        assert float(a.abs().max()) > 1.0
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-9), f"train={train}"
    with pytest.raises(UserError, match="cell1.cell_architecture.0.1.weight"):
        from_reference_state_dict(ref.state_dict(), "0102 0030 3003 0000", "cifar100")
