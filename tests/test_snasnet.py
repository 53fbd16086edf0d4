"""SNASNet: connection-matrix parsing and validation, cell semantics, macro network, search score."""

import math
import re

import numpy as np
import pytest
import torch

from models.snasnet import (
    PUBLISHED,
    CellMatrix,
    CellMatrixError,
    SNASCell,
    SNASNet,
    build_snasnet,
    parse_cnt_mat,
    random_cell,
    snasnet_from_config,
)
from models.snasnet_search import draw_candidates, hamming_kernel, score_model, search
from sim.errors import UserError

torch.set_num_threads(1)


def conv_edges(model, cell="cell1"):
    ops = getattr(model, cell).ops
    return {n: ops[n].code for n in ops if ops[n].code in (2, 3)}


def test_published_cifar100_cell_edges():
    m = parse_cnt_mat("0302 0030 3003 0000")
    assert m.forward_edges() == [(0, 1, 3), (1, 2, 3), (0, 3, 2), (2, 3, 3)]
    assert m.backward_edges() == [(2, 0, 3)]
    net = build_snasnet(m, "cifar100", channels=4)
    for cell in ("cell1", "cell2"):
        convs = conv_edges(net, cell)
        assert convs == {"f01": 3, "f12": 3, "f03": 2, "f23": 3, "b20": 3}
        fwd = [n for n in convs if n.startswith("f")]
        bwd = [n for n in convs if n.startswith("b")]
        assert len(fwd) == 4 and len(bwd) == 1
    ops = net.cell1.ops
    assert ops["f03"].conv.kernel_size == (1, 1) and ops["b20"].conv.kernel_size == (3, 3)
    assert ops["b20"].conv.padding == (1, 1)
    assert net.cell2.ops["f01"].conv.in_channels == 8
    assert net.fc2.out_features == 500  # 100 classes x 5
    out = net(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 100) and net.last_logits.shape == (5, 2, 100)


def test_published_cifar10_cell_edges():
    m = parse_cnt_mat(PUBLISHED["cifar10"].split())
    assert m.forward_edges() == [(0, 1, 3), (1, 2, 3), (0, 3, 3), (2, 3, 2)]
    assert m.backward_edges() == [(2, 0, 2), (3, 1, 2)]
    net = build_snasnet(m, "cifar10", channels=4)
    assert net.pool2.kernel_size == 4 and net.fc2.out_features == 100
    assert net.fc1.in_features == 8 * 4 * 4
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert [n for n, _, _ in net.spike_convs()] == [
        "cell1.f01", "cell1.f12", "cell1.f03", "cell1.f23", "cell1.b20", "cell1.b31", "down",
        "cell2.f01", "cell2.f12", "cell2.f03", "cell2.f23", "cell2.b20", "cell2.b31", "fc2"]


def test_fashion_mnist_shape_and_config_roundtrip():
    net = build_snasnet(PUBLISHED["cifar100"], "fashion-mnist", channels=2, T=3)
    assert net(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    again = snasnet_from_config(net.config)
    again.load_state_dict(net.state_dict())
    assert again.config == net.config


@pytest.mark.parametrize("text, words", [
    ("0302 0030 3003", "expected 4 rows"),
    ("0302 0030 3003 0000 0000", "expected 4 rows"),
    ("0302 0030 3003 00000", "row 3 '00000' has 5 characters"),
    ("0302 003 3003 0000", "row 1 '003' has 3 characters"),
    ("0302 0050 3003 0000", "row 1 column 2: '5' is not an operation code"),
    ("0302 00a0 3003 0000", "'a' is not an operation code"),
    ("0300 0030 3003 0000", "edge 0->3 (row 0, column 3) is missing"),
    ("0303 0030 0000 0000", "node 1 has edges but is cut off from node 3"),
    ("0301 0000 3000 0000", "node 1 has edges but is cut off from node 3"),
    ("0001 0000 0000 0030", "node 2 has edges but is cut off from node 3"),
    ("0001 0000 0002 0000", "node 2 has edges but is cut off from node 0"),
])
def test_bad_matrices_refused(text, words):
    with pytest.raises(CellMatrixError, match=re.escape(words)) as exc:
        parse_cnt_mat(text)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(f"--cnt-mat {text}")
    assert isinstance(exc.value, UserError) and isinstance(exc.value, ValueError)


def test_minimal_and_diagonal():
    assert parse_cnt_mat("0001 0000 0000 0000").edges() == [(0, 3)]
    # the diagonal is ignored
    assert parse_cnt_mat("3001 0300 0030 0003").edges() == [(0, 3)]


def test_random_cells_valid_and_roundtrip():
    rng = np.random.default_rng(0)
    for _ in range(200):
        m = random_cell(rng)
        assert parse_cnt_mat(str(m)) == m
        assert m.op(0, 3) != 0
    assert [str(m) for m in draw_candidates(20, 5)] == [str(m) for m in draw_candidates(20, 5)]
    assert len({m.rows for m in draw_candidates(50, 5)}) == 50


def test_backward_edge_acts_from_second_timestep():
    torch.manual_seed(0)
    with_b = SNASCell(parse_cnt_mat("0302 0030 3003 0000"), 4).eval()
    without = SNASCell(parse_cnt_mat("0302 0030 0003 0000"), 4).eval()
    missing, unexpected = without.load_state_dict(with_b.state_dict(), strict=False)
    assert not missing and all(k.startswith("ops.b20.") for k in unexpected)
    with torch.no_grad():  # a backward output even when its LIF stays silent at t = 0
        with_b.ops["b20"].bn.bias.fill_(1.0)
    x = 3 * torch.randn(4, 2, 4, 6, 6)
    from spikingjelly.activation_based import functional

    with torch.no_grad():
        functional.reset_net(with_b)
        functional.reset_net(without)
        a, b = with_b(x), without(x)
    assert torch.equal(a[0], b[0])
    for t in range(1, 4):
        assert not torch.allclose(a[t], b[t]), f"backward edge has no effect at t={t}"


def test_backward_edge_in_network_first_timestep_unchanged():
    torch.manual_seed(1)
    a = build_snasnet("0302 0030 3003 0000", "fashion-mnist", channels=4, T=3).eval()
    b = build_snasnet("0302 0030 0003 0000", "fashion-mnist", channels=4, T=3).eval()
    b.load_state_dict(a.state_dict(), strict=False)
    x = 3 * torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        a(x), b(x)
        # the second call must not see state of the first: state is reset per sample (forward)
        first = a.last_logits.clone()
        a(x)
    assert torch.equal(a.last_logits, first)
    assert torch.equal(a.last_logits[0], b.last_logits[0])


def test_invalid_sizes():
    with pytest.raises(ValueError, match="too small"):
        SNASNet(parse_cnt_mat(PUBLISHED["cifar10"]), 2, (1, 4, 4), 10, 2, 4)
    with pytest.raises(ValueError, match="T must be"):
        SNASNet(parse_cnt_mat(PUBLISHED["cifar10"]), 2, (1, 28, 28), 10, 0)
    with pytest.raises(UserError, match="--dataset"):
        build_snasnet(PUBLISHED["cifar10"], "mnist")


def test_hamming_kernel_matches_official_formula():
    x = torch.tensor([[1, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.float32)
    K = hamming_kernel(x)
    n = 4
    p = x.double().mean(1)
    for a in range(3):
        for b in range(3):
            h = float((x[a] != x[b]).sum())
            norm = p[a] * (1 - p[b]) + (1 - p[a]) * p[b]  # official: rates, not expected counts
            assert float(K[a, b]) == pytest.approx(n - 0.5 * h / (float(norm) + 1e-3), rel=1e-12)
    assert torch.equal(K, K.T)


def test_score_deterministic():
    torch.manual_seed(3)
    net = build_snasnet(PUBLISHED["cifar100"], "fashion-mnist", channels=2, T=2)
    batches = [torch.randn(6, 1, 28, 28), torch.randn(6, 1, 28, 28)]
    s1 = score_model(net, batches)
    s2 = score_model(net, batches)
    assert s1 == s2 and math.isfinite(s1)
    assert net.training  # modes restored
    net.eval()
    assert score_model(net, batches) == s1 and not net.training


def test_search_reproducible_synthetic():
    batches = [torch.randn(4, 1, 28, 28)]

    def build(m):
        return build_snasnet(m, "fashion-mnist", channels=2, T=2)

    r1 = search(build, batches, num_search=3, seed=7, progress=False)
    r2 = search(build, batches, num_search=3, seed=7, progress=False)
    assert [(str(c.matrix), c.score) for c in r1] == [(str(c.matrix), c.score) for c in r2]
    scores = [c.score for c in r1]
    assert scores == sorted(scores, reverse=True)


def test_search_on_fashion_mnist():
    from models.data import FASHION_MNIST_DIR, batches, load_dataset

    if not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST not installed at {FASHION_MNIST_DIR} (Debian package dataset-fashion-mnist)")
    ds = load_dataset("fashion-mnist", None, "test").subset(64)
    bs = [x for _, (x, _) in zip(range(2), batches(ds, 8, shuffle=True, seed=0))]
    res = search(lambda m: build_snasnet(m, "fashion-mnist", channels=2, T=2), bs, num_search=4, seed=0,
                 progress=False)
    assert len(res) == 4
    best = res[0]
    assert isinstance(best.matrix, CellMatrix) and parse_cnt_mat(str(best.matrix)) == best.matrix
    assert math.isfinite(best.score)


def test_fused_lif_equals_spikingjelly():
    """The scoring path's LIF gives spikingjelly's spikes and membranes exactly, across calls."""
    from spikingjelly.activation_based import functional, neuron, surrogate

    from models.layers import fused_lifs, make_lif

    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 8, 4, 5, 5, generator=g) * 1.5 + 0.4
    x = x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
    soft = neuron.LIFNode(tau=2.0, v_reset=0.5, v_threshold=0.8, surrogate_function=surrogate.ATan(),
                          detach_reset=True, step_mode="m")
    for lif in (make_lif(), soft):
        with torch.no_grad():
            want = [lif(x[:4]), lif(x[4:5]), lif(x[5:])]  # the membrane carries over between calls
            v_want = lif.v.clone()
            functional.reset_net(lif)
            with fused_lifs(lif) as f:
                assert f.lifs == [lif]
                got = [lif(x[:4]), lif(x[4:5]), lif(x[5:])]
            assert all(torch.equal(a, b) for a, b in zip(want, got)) and torch.equal(lif.v, v_want)
        assert 0.05 < float(want[0].mean()) < 0.95  # spikes and silence both present
        functional.reset_net(lif)
    assert "forward" not in lif.__dict__  # restored
    lif = make_lif()
    with fused_lifs(lif):  # gradients wanted: spikingjelly's own path, surrogate gradient included
        xg = x.clone().requires_grad_()
        lif(xg).sum().backward()
    assert float(xg.grad.abs().sum()) > 0


def test_scoring_fast_path_is_exact(monkeypatch):
    """Score and BN state with the fused LIFs and in-place per-timestep BN equal the plain modules'."""
    import contextlib

    import models.snasnet as sn
    import models.snasnet_search as ss

    torch.manual_seed(1)
    net = build_snasnet("0303 0030 2002 0200", "fashion-mnist", channels=3, T=3)
    xs = [torch.randn(8, 1, 28, 28), torch.randn(8, 1, 28, 28)]
    fast = score_model(net, xs)
    monkeypatch.setattr(ss, "fused_lifs", lambda m: contextlib.nullcontext())
    with torch.enable_grad():  # bn_seq's autograd path (stacked BN outputs) everywhere
        monkeypatch.setattr(sn.torch, "is_grad_enabled", lambda: True)
        plain = score_model(net, xs)
    assert math.isfinite(fast) and fast == plain
    bn = torch.nn.BatchNorm2d(3, momentum=None)
    ref = torch.nn.BatchNorm2d(3, momentum=None)
    x = torch.randn(2, 4, 3, 5, 5)
    with torch.no_grad():
        for _ in range(2):
            a = sn.bn_seq(ref.train(), x, True)  # (is_grad_enabled patched: the stacked path)
        monkeypatch.undo()
        for _ in range(2):
            b = sn.bn_seq(bn.train(), x, True)
    assert torch.equal(a, b)
    assert all(torch.equal(u, w) for u, w in zip(ref.state_dict().values(), bn.state_dict().values()))


@pytest.mark.parametrize("text", ["0443 0004 0004 0000", "0443 0004 0004 0200"])
def test_cell_pools_a_constant_input_once_and_stays_channels_last(text):
    """Cell 1's input is the stem's map repeated over T (an expanded tensor): its pooling edges pool
    it once, with the same values as pooling every step; the output keeps the channels-last layout
    (also when the steps are assembled one by one: the second cell has a backward edge 3->1)."""
    from spikingjelly.activation_based import functional

    net = build_snasnet(text, "fashion-mnist", channels=3, T=3)
    cell = net.cell1.train()
    assert bool(cell.recurrent) == text.endswith("0200")
    seen = []
    cell.ops["f01"].pool.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].shape[0]))
    cur = torch.randn(4, 3, 6, 6).contiguous(memory_format=torch.channels_last)
    x = cur.unsqueeze(0).expand(3, *cur.shape)
    with torch.no_grad():
        functional.reset_net(cell)
        once = cell(x)
        functional.reset_net(cell)
        per_step = cell(x.clone())  # a materialised input: pooled as T x B maps
    assert seen == [4, 12]
    assert torch.equal(once, per_step) and float(once.abs().sum()) > 0
    want = torch.empty(12, 3, 6, 6, memory_format=torch.channels_last).view(3, 4, 3, 6, 6).stride()
    assert once.stride() == want and per_step.stride() == want
