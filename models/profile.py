"""Silent-neuron profiling (spec/snn.md section 4; the columns of LoAS Table II).

Per spike layer (the spikes entering it; the encoding layer excluded): the fraction of input neurons
with exactly 0..T spikes over the T timesteps, the spike sparsity (fraction of zero bits), the
silent ratio (fraction with no spike) and the layer's weight sparsity, all on the feature map
(C x H x W). Whole-network feature-map figures weight each layer by its neuron count, the weight
sparsity by its weight count. Beside them, ``table2``: the same spike figures on LoAS Table II's
basis (the layer's im2col matrix, zero padding included, pooled over layers by element count, with
the "strong" silent ratio; :mod:`sim.stats`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from sim.stats import KEYS as TABLE2_KEYS
from sim.stats import pool, table2_counts_from_counts, table2_ratios

from .layers import spike_layers


@dataclass
class LayerProfile:
    """Accumulated spike statistics of one layer's input.

    Attributes
    ----------
    name : str
    T : int
    neurons : int
        Input neurons per sample (C*H*W or features).
    counts : list[int]
        counts[i] = number of (sample, neuron) with exactly i spikes, i = 0..T.
    weights, zero_weights : int
        Size and zeros of the layer's weight.
    """

    name: str
    T: int
    neurons: int = 0
    counts: list = field(default_factory=list)
    weights: int = 0
    zero_weights: int = 0
    table2_counts: dict = field(default_factory=lambda: dict.fromkeys(TABLE2_KEYS, 0))

    def add(self, spikes: torch.Tensor, op: nn.Module | None = None) -> None:
        """Accumulate 0/1 ``spikes`` ``[T, B, ...]`` entering ``op`` (an ``nn.Conv2d`` lowers them
        with its kernel, stride and padding for the Table II counts; otherwise they are the GEMM rows)."""
        if not self.counts:
            self.counts = [0] * (self.T + 1)
            self.neurons = int(np.prod(spikes.shape[2:]))
        hist = spike_count_histogram(spikes)
        for i, c in enumerate(hist):
            self.counts[i] += int(c)
        per = spikes.detach().sum(0)  # spikes per neuron, [B, ...]
        if isinstance(op, nn.Conv2d):
            per = F.unfold(per.to(torch.float32), op.kernel_size, op.dilation, op.padding, op.stride)
        for k, v in table2_counts_from_counts(per.to(torch.int64).numpy()).items():
            self.table2_counts[k] += v

    @property
    def total(self) -> int:
        return sum(self.counts)

    @property
    def fractions(self) -> list[float]:
        tot = max(1, self.total)
        return [c / tot for c in self.counts]

    @property
    def spike_sparsity(self) -> float:
        spikes = sum(i * c for i, c in enumerate(self.counts))
        return 1.0 - spikes / max(1, self.total * self.T)

    @property
    def silent_ratio(self) -> float:
        return self.counts[0] / max(1, self.total) if self.counts else 1.0

    @property
    def weight_sparsity(self) -> float:
        return self.zero_weights / max(1, self.weights)

    @property
    def table2(self) -> dict:
        return table2_ratios(self.table2_counts, self.T)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(fractions=self.fractions, spike_sparsity=self.spike_sparsity,
                 silent_ratio=self.silent_ratio, weight_sparsity=self.weight_sparsity, table2=self.table2)
        return d


def spike_count_histogram(spikes: torch.Tensor) -> list[int]:
    """Number of neurons with exactly 0..T spikes in 0/1 ``spikes`` ``[T, ...]`` (over all other dims).

    Raises
    ------
    ValueError
        If ``spikes`` holds values other than 0 and 1.
    """
    s = spikes.detach()
    if not bool(((s == 0) | (s == 1)).all()):
        raise ValueError("spike tensor holds values other than 0 and 1")
    T = s.shape[0]
    cnt = s.sum(0).to(torch.int64).flatten()
    return torch.bincount(cnt, minlength=T + 1).tolist()


def network_summary(layers: list[LayerProfile]) -> dict:
    """Whole-network figures: spike figures weighted by neuron count, weight sparsity by weight count."""
    tot = sum(p.total for p in layers)
    T = layers[0].T if layers else 0
    frac = [sum(p.counts[i] for p in layers) / max(1, tot) for i in range(T + 1)]
    spikes = sum(i * sum(p.counts[i] for p in layers) for i in range(T + 1))
    w = sum(p.weights for p in layers)
    z = sum(p.zero_weights for p in layers)
    return {"fractions": frac, "spike_sparsity": 1.0 - spikes / max(1, tot * T),
            "silent_ratio": frac[0] if frac else 1.0, "weight_sparsity": z / max(1, w),
            "table2": table2_ratios(pool([p.table2_counts for p in layers]), T)}


@torch.no_grad()
def profile_model(model, batches_iter, *, progress: bool = False, total: int | None = None) -> dict:
    """Profile every non-encoding spike layer of ``model`` over ``(images, labels)`` batches.

    Returns ``{"layers": [LayerProfile.to_dict()], "network": network_summary, "accuracy": ..,
    "n_mask": .., "T": ..}``.
    """
    from tqdm import tqdm

    from .export import layer_name

    model.eval()
    layers = [(n, m) for n, m in spike_layers(model) if not m.encoding]
    profs = {n: LayerProfile(layer_name(n), model.T) for n, _ in layers}
    for n, m in layers:
        profs[n].weights = m.op.weight.numel()
        profs[n].zero_weights = int((m.op.weight == 0).sum())
    hooks = [m.register_forward_pre_hook(lambda mod, inp, n=n: profs[n].add(inp[0], mod.op)) for n, m in layers]
    correct = seen = 0
    try:
        for x, y in tqdm(batches_iter, total=total, desc="profile", disable=not progress, leave=False):
            correct += int((model(x).argmax(1) == y).sum())
            seen += len(y)
    finally:
        for h in hooks:
            h.remove()
    plist = [profs[n] for n, _ in layers]
    return {"T": model.T, "n_mask": model.n_mask, "samples": seen, "accuracy": correct / max(1, seen),
            "layers": [p.to_dict() for p in plist], "network": network_summary(plist)}


def format_table(report: dict) -> str:
    """The profile as a fixed-width table (one row per layer, then the network row)."""
    T = report["T"]
    w = 10 + 8 * (T + 1)
    top = f"{'feature map (C x H x W)':^{w + 18}}  {'Table II (im2col, padding)':^26}"
    head = f"{'layer':<10}" + "".join(f"{f'{i} sp':>8}" for i in range(T + 1)) + \
        f"{'spike sp':>10}{'silent':>8}  {'spike sp':>10}{'silent':>8}{'strong':>8}{'w sp':>8}"
    rows = [f"n_mask {report['n_mask']}, T {T}, {report['samples']} samples, "
            f"accuracy {report['accuracy']:.4f}", top, head]

    def row(name, d):
        t2 = d["table2"]
        return f"{name:<10}" + "".join(f"{v:>8.3f}" for v in d["fractions"]) + \
            f"{d['spike_sparsity']:>10.3f}{d['silent_ratio']:>8.3f}  {t2['spike_sparsity']:>10.3f}" \
            f"{t2['silent_ratio']:>8.3f}{t2['silent_ratio_strong']:>8.3f}{d['weight_sparsity']:>8.3f}"

    rows += [row(d["name"], d) for d in report["layers"]]
    rows.append(row("network", report["network"]))
    return "\n".join(rows)
