"""LoAS Table II's statistics (sim/stats.py) held to a hand-made tensor, on both paths: packed trace
words (`loas trace stats`) and torch spikes through a conv (`loas profile`)."""

import numpy as np
import pytest
import torch
import torch.nn as nn

from models.profile import LayerProfile, network_summary
from sim.stats import pool, table2_counts, table2_ratios
from sim.trace import Geometry, im2col

# T = 2, one channel, a 2 x 2 image; spikes per neuron [[2, 1], [0, 0]]. A 3x3 kernel with padding 1
# sees the whole image from each of the 4 output pixels: every im2col row holds the 4 counts and 5
# padding zeros, so M x K = 4 x 9 = 36 words with 4 * 3 = 12 spikes, 4 * (5 + 2) = 28 silent words
# and 4 * (5 + 2 + 1) = 32 words with at most one spike.
SPIKES = torch.tensor([[[[1, 1], [0, 0]]], [[[1, 0], [0, 0]]]], dtype=torch.float32)  # [T, C, H, W]
WANT = {"elements": 36, "spikes": 12, "silent": 28, "silent_strong": 32}


def test_table2_on_trace_words():
    words = np.array([[[3, 1], [0, 0]]], np.uint16)  # bit t = timestep t
    rows = im2col(words, Geometry(1, 2, 2, 3, 1, 1, 1))
    assert rows.shape == (4, 9)
    c = table2_counts(rows)
    assert c == WANT
    r = table2_ratios(c, 2)
    assert r["spike_sparsity"] == pytest.approx(1 - 12 / 72)
    assert r["silent_ratio"] == pytest.approx(28 / 36) and r["silent_ratio_strong"] == pytest.approx(32 / 36)


def test_table2_in_the_profile_and_pooling_by_elements():
    p = LayerProfile("conv2", 2)
    p.add(SPIKES[:, None], nn.Conv2d(1, 1, 3, padding=1))  # [T, B=1, C, H, W]
    assert p.table2_counts == WANT
    assert p.silent_ratio == 0.5 and p.spike_sparsity == pytest.approx(1 - 3 / 8)  # feature map
    fc = LayerProfile("fc", 2)
    fc.add(torch.ones(2, 1, 4))  # 4 features, all firing twice: 4 elements, no silent word
    net = network_summary([p, fc])["table2"]
    assert net["elements"] == 40 and net["silent_ratio"] == pytest.approx(28 / 40)
    assert net["spike_sparsity"] == pytest.approx(1 - (12 + 8) / 80)
    assert pool([WANT, WANT])["silent_strong"] == 64
