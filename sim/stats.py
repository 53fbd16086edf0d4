"""Spike statistics on LoAS Table II's basis.

Table II of the LoAS paper (its artifact's ``loas_input_convert.py``) computes the spike figures on
the GEMM operand, not on the neurons: the im2col matrix A (T x M x K) of a layer's input, zero
padding included, pooled over the layers by element count. Per (m, k) position the T spike bits
form one word:

* spike sparsity        1 - spikes / (T * M * K)
* silent ratio          words with no spike / (M * K)
* silent ratio, strong  words with at most one spike / (M * K) (n_mask = 1 also silences words that
                        fire exactly once: Table II's "strong" column)

A neuron appears in up to kernel^2 positions and every padding position is a silent word, so these
differ from the same figures on the feature map (C x H x W), which ``loas trace stats`` and
``loas profile`` print beside them, labelled.
"""

from __future__ import annotations

import numpy as np

KEYS = ("elements", "spikes", "silent", "silent_strong")


def table2_counts_from_counts(counts) -> dict:
    """Counts of Table II from the per-position spike counts (0..T) of an im2col matrix (any shape)."""
    c = np.asarray(counts)
    return {"elements": int(c.size), "spikes": int(c.sum(dtype=np.int64)), "silent": int((c == 0).sum()),
            "silent_strong": int((c <= 1).sum())}


def table2_counts(words: np.ndarray) -> dict:
    """Counts of Table II from packed im2col spike words (M, K) (or any shape)."""
    return table2_counts_from_counts(np.bitwise_count(np.asarray(words, np.uint16)))


def pool(counts: list[dict]) -> dict:
    """Counts of several layers pooled (Table II's element-count weighting)."""
    return {k: int(sum(c[k] for c in counts)) for k in KEYS}


def table2_ratios(c: dict, T: int) -> dict:
    """The three Table II figures of (pooled) counts."""
    n = max(1, c["elements"])
    return {"spike_sparsity": 1.0 - c["spikes"] / (T * n), "silent_ratio": c["silent"] / n,
            "silent_ratio_strong": c["silent_strong"] / n, "elements": c["elements"]}
