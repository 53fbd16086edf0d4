"""Synthetic layers and workloads at chosen densities, for tests, benchmarks and design sweeps.

Spikes are drawn per neuron so that a `silent_ratio` fraction of words is exactly zero and the
remaining words are uniform over the non-zero T-bit words; weights are int8 with a
`weight_density` fraction of non-zeros. Expected outputs come from the golden model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sim.golden import LIFParams, run_layer
from sim.trace import Geometry, im2col, write_layer, write_manifest


def random_words(rng, shape, T: int, silent_ratio: float) -> np.ndarray:
    """uint16 spike words: zero with probability silent_ratio, else uniform over 1..2^T-1."""
    words = rng.integers(1, 1 << T, size=shape, dtype=np.uint16)
    words[rng.random(shape) < silent_ratio] = 0
    return words


def random_weights(rng, shape, weight_density: float) -> np.ndarray:
    w = rng.integers(-127, 128, size=shape).astype(np.int8)
    w[rng.random(shape) >= weight_density] = 0
    return w


def default_threshold(K: int, weight_density: float, silent_ratio: float) -> int:
    """LIF threshold of a synthetic layer: about one typical matched weight, which gives a mix of
    firing and silent outputs."""
    return max(1, int(64 * max(1.0, K * weight_density * (1 - silent_ratio) / 4)))


def golden_outputs(words, weights, T: int) -> np.ndarray:
    """Output words of a layer given without them (a synthetic layer: no bias, no LIF settings):
    the golden model's, with zero bias and :func:`default_threshold` at the operands' densities."""
    words, weights = np.asarray(words), np.asarray(weights)
    K, N = weights.shape
    th = default_threshold(K, np.count_nonzero(weights) / max(1, weights.size),
                           float((words == 0).mean()) if words.size else 1.0)
    return run_layer(words, weights, np.zeros(N, np.int64), LIFParams(th), T).out_words


def random_layer(rng, g: Geometry, T: int, *, silent_ratio=0.7, weight_density=0.05, samples=1,
                 threshold=None, n_mask=0):
    """A random layer as the keyword arguments of :func:`sim.trace.write_layer`."""
    spike_words = random_words(rng, (samples, g.c_in, g.h, g.w), T, silent_ratio)
    weight = random_weights(rng, (g.c_out, g.c_in, g.kernel, g.kernel), weight_density)
    bias = rng.integers(-64, 64, size=g.c_out).astype(np.int64)
    if threshold is None:
        threshold = default_threshold(g.K, weight_density, silent_ratio)
    lif = LIFParams(int(threshold))
    wkn = np.ascontiguousarray(weight.reshape(g.N, g.K).T)
    expected = np.stack([
        run_layer(im2col(spike_words[s], g), wkn, bias, lif, T, n_mask=n_mask).out_words
        for s in range(samples)
    ])
    return dict(T=T, geometry=g, spike_words=spike_words, weight=weight, bias=bias, lif=lif,
                n_mask=n_mask, expected_out_words=expected)


def write_random_workload(directory, layers: dict[str, Geometry], *, T=4, seed=0, silent_ratio=0.7,
                          weight_density=0.05, samples=1, n_mask=0, name=None) -> Path:
    """Write a complete synthetic workload (manifest + one npz per layer) and return its path."""
    directory = Path(directory)
    rng = np.random.default_rng(seed)
    for lname, g in layers.items():
        kw = random_layer(rng, g, T, silent_ratio=silent_ratio, weight_density=weight_density,
                          samples=samples, n_mask=n_mask)
        write_layer(directory / f"{lname}.npz", **kw)
    write_manifest(
        directory, name=name or directory.name, T=T,
        layers=[(n, "fc" if g.h == g.w == g.kernel == 1 else "conv") for n, g in layers.items()],
        provenance={"model": "synthetic", "dataset": "none", "checkpoint_sha256": None,
                    "command": f"sim.synthetic.write_random_workload(seed={seed}, silent_ratio={silent_ratio}, "
                               f"weight_density={weight_density})"},
    )
    return directory
