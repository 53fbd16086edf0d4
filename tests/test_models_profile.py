"""Profile figures on hand-made spike tensors."""

import pytest
import torch

from models.profile import LayerProfile, network_summary, profile_model, spike_count_histogram
from models.zoo import default_net




def hand_made():
    # T = 4, one sample, 8 neurons with 0,0,0,0,1,2,3,4 spikes
    s = torch.zeros(4, 1, 8)
    for j, n in enumerate([0, 0, 0, 0, 1, 2, 3, 4]):
        s[:n, 0, j] = 1
    return s


def test_histogram_and_layer_figures():
    s = hand_made()
    assert spike_count_histogram(s) == [4, 1, 1, 1, 1]
    p = LayerProfile("conv2", 4)
    p.add(s)
    p.weights, p.zero_weights = 10, 9
    assert p.neurons == 8
    assert p.fractions == [0.5, 0.125, 0.125, 0.125, 0.125]
    assert p.spike_sparsity == pytest.approx(1 - 10 / 32)
    assert p.silent_ratio == 0.5
    assert p.weight_sparsity == 0.9


def test_network_figures_weighted_by_neurons():
    a = LayerProfile("a", 4)
    a.add(hand_made())  # 8 neurons, 4 silent, 10 spikes
    b = LayerProfile("b", 4)
    b.add(torch.ones(4, 1, 24))  # 24 neurons, none silent, all 4 spikes
    a.weights, a.zero_weights, b.weights, b.zero_weights = 100, 90, 300, 297
    net = network_summary([a, b])
    assert net["silent_ratio"] == pytest.approx(4 / 32)
    assert net["spike_sparsity"] == pytest.approx(1 - (10 + 96) / 128)
    assert net["fractions"][4] == pytest.approx(25 / 32)
    assert net["weight_sparsity"] == pytest.approx(387 / 400)


def test_histogram_rejects_non_binary():
    with pytest.raises(ValueError, match="other than 0 and 1"):
        spike_count_histogram(torch.full((4, 3), 0.5))


@pytest.mark.parametrize("n_mask", [0, 1, 2])
def test_profile_model_with_n_mask(n_mask):
    torch.manual_seed(0)
    m = default_net(width=2, n_mask=n_mask)
    x = torch.randn(6, 1, 28, 28)
    rep = profile_model(m, [(x, torch.zeros(6, dtype=torch.long))])
    assert [d["name"] for d in rep["layers"]] == ["conv2", "conv3", "conv4", "conv5"]
    for d in rep["layers"][1:]:  # inputs after a masked LIF: no neuron with 1..n_mask spikes
        assert all(d["fractions"][i] == 0 for i in range(1, n_mask + 1))
    assert rep["n_mask"] == n_mask and rep["samples"] == 6
    assert sum(rep["network"]["fractions"]) == pytest.approx(1.0)
