"""LIF and n_mask semantics on hand-made inputs, float and integer, and the zoo's shapes."""

import pytest
import torch

from models.export import pack_words, unpack_words
from models.layers import SpikeConv, apply_n_mask, integer_lif, make_lif
from models.zoo import ZOO, build, default_net, gemm_shapes, vgg16




def spikes_from_counts(pattern):
    """[T, n] spikes from per-neuron lists of firing timesteps."""
    T = 4
    s = torch.zeros(T, len(pattern))
    for j, ts in enumerate(pattern):
        for t in ts:
            s[t, j] = 1
    return s


def test_float_lif_charge_fire_and_hard_reset():
    lif = make_lif()
    # constant input 0.8: H = 0.6, then 0.25*0.6 + 0.6 = 0.75, 0.7875, 0.796875: never fires
    # constant input 1.0: H = 0.75, 0.9375, 0.984375, ... never reaches 1 either (fixed point 1)
    # constant input 1.4: H = 1.05 fires at t0, reset to 0, fires again every step
    # input 1.2 then 0.5, 0, 1.2: H = 0.9, 0.6, 0.15, 0.9375
    x = torch.tensor([[0.8, 1.0, 1.4, 1.2], [0.8, 1.0, 1.4, 0.5], [0.8, 1.0, 1.4, 0.0],
                      [0.8, 1.0, 1.4, 1.2]]).reshape(4, 1, 4)
    out = lif(x)[:, 0]
    expected = torch.tensor([[0, 0, 1, 0], [0, 0, 1, 0], [0, 0, 1, 0], [0, 0, 1, 0]], dtype=out.dtype)
    assert torch.equal(out, expected)
    # exactly reaching the threshold fires (>=): 4/3 * 0.75 = 1
    lif2 = make_lif()
    assert lif2(torch.full((1, 1, 1), 4.0 / 3.0)).item() == 1.0


def test_integer_lif_hand_made():
    # threshold 10; O rows per neuron over t
    O = torch.tensor([[10, 0, 0, 0],      # fires at t0 (>=), then silent
                      [9, 8, 0, 0],       # 9; 9>>2=2, 2+8=10 fires at t1
                      [-5, 11, 0, 12],    # -5; -5>>2 = -2 (floor); -2+11=9 no; 9>>2=2; 2+0 no; 0+12 fires
                      [40, 40, 40, 40]]).T.reshape(4, 4)
    out = integer_lif(O, 10)
    assert out[:, 0].tolist() == [1, 0, 0, 0]
    assert out[:, 1].tolist() == [0, 1, 0, 0]
    assert out[:, 2].tolist() == [0, 0, 0, 1]
    assert out[:, 3].tolist() == [1, 1, 1, 1]


@pytest.mark.parametrize("n_mask, kept", [(0, [0, 1, 2, 3, 4]), (1, [0, 2, 3, 4]), (2, [0, 3, 4])])
def test_n_mask_semantics(n_mask, kept):
    # neuron j fires j times (neuron 0 silent)
    s = spikes_from_counts([[], [2], [0, 3], [0, 1, 2], [0, 1, 2, 3]])
    out = apply_n_mask(s, n_mask)
    for j in range(5):
        assert torch.equal(out[:, j], s[:, j] if j in kept else torch.zeros(4))


@pytest.mark.parametrize("bad", [3, -1, 1.5, "1", True, None])
def test_n_mask_rejects_other_values(bad):
    with pytest.raises(ValueError, match="n_mask must be 0, 1 or 2"):
        default_net(n_mask=bad)
    m = default_net()
    with pytest.raises(ValueError, match="n_mask"):
        m.n_mask = bad


def test_n_mask_applies_after_every_lif_but_the_encoding_one():
    m = default_net(width=2, n_mask=2)
    layers = dict(m.stages.items())
    assert layers["conv1"].n_mask == 0
    assert all(layers[f"conv{i}"].n_mask == 2 for i in range(2, 6))
    m.n_mask = 1
    assert layers["conv1"].n_mask == 0 and layers["conv5"].n_mask == 1


def test_pack_words_bit_t_is_timestep_t():
    s = torch.tensor([[1, 0], [0, 0], [1, 0], [0, 1]], dtype=torch.float32)  # [T=4, 2]
    words = pack_words(s)
    assert words.tolist() == [0b0101, 0b1000]
    assert torch.equal(unpack_words(words, 4), s)


def test_vgg16_gemm_shapes_match_spec():
    shapes = gemm_shapes(vgg16(), (3, 32, 32))
    assert len(shapes) == 13
    assert shapes["conv2"] == (1024, 576, 64)
    assert [shapes[f"conv{i}"][0] for i in range(3, 14)] == [256] * 2 + [64] * 3 + [16] * 3 + [4] * 3
    assert max(k for _, k, _ in shapes.values()) == 4608
    assert max(n for _, _, n in shapes.values()) == 512


def test_alexnet_and_resnet19_shapes():
    a = gemm_shapes(build("alexnet", variant="ours"), (3, 32, 32))
    assert a["conv1"] == (256, 27, 64) and a["conv2"] == (64, 576, 192)
    assert [a[f"conv{i}"][0] for i in (3, 4, 5)] == [16, 16, 16]
    bug = gemm_shapes(build("alexnet", variant="loas"), (3, 32, 32))
    assert [bug[f"conv{i}"][0] for i in (3, 4, 5)] == [64, 64, 64]  # LoAS code: conv3..5 at 8x8
    r = gemm_shapes(build("resnet19", variant="ours"), (3, 32, 32))
    main = {k: v for k, v in r.items() if "shortcut" not in k}
    assert len(main) == 17  # conv1 + 8 blocks x 2; + fc1, fc2 = 19 weight layers
    assert r["blocks.0.conv1"] == (256, 576, 128)
    assert r["blocks.7.conv2"] == (16, 4608, 512)
    assert sum("shortcut" in k for k in r) == 3


def test_default_net_is_vgg_style_with_five_convs():
    m = default_net(width=4)
    convs = [n for n, mod in m.named_modules() if isinstance(mod, torch.nn.Conv2d)]
    assert len(convs) >= 5
    shapes = gemm_shapes(m, (1, 28, 28))
    assert shapes["conv1"][0] == 28 * 28 and shapes["conv2"][0] == 14 * 14
    assert shapes["conv5"][0] == 7 * 7


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_forward_output_shape(name):
    torch.manual_seed(0)
    m = build(name, T=2, n_mask=1)
    m.eval()
    shape = ZOO[name][1]
    with torch.no_grad():
        out = m(torch.randn(2, *shape))
    assert out.shape == (2, 10)
    assert m.last_logits.shape == (2, 2, 10)


def test_T_validation():
    with pytest.raises(ValueError, match="T must be"):
        vgg16(T=0)


def test_encoding_layer_repeats_the_current():
    layer = SpikeConv(1, 2, encoding=True)
    layer.T = 3
    layer.eval()
    with torch.no_grad():
        out = layer(torch.randn(5, 1, 4, 4))
    assert out.shape == (3, 5, 2, 4, 4)
