"""SNASNet search without training (spec/snn.md section 5): rank random cells by the log-determinant
of a spike-pattern kernel measured at initialisation.

For a batch of B samples, every LIF output at every timestep is binarised and flattened to a pattern
x (B x N). With H the Hamming distances between the samples' patterns and normK the distance expected
from their firing rates p (``N * (p_a (1 - p_b) + (1 - p_a) p_b)``), the kernel accumulates::

    K += N - 0.5 * H / (normK + 1e-3)

over every (LIF, timestep). The score is ``log|det K|``, averaged over the batches. Networks whose
LIFs separate the inputs well score high. The kernel is computed in float64, so a fixed model and
batch give the same score every time.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from spikingjelly.activation_based import neuron

from .snasnet import CellMatrix, random_cell


def hamming_kernel(x: torch.Tensor) -> torch.Tensor:
    """Kernel contribution ``N - 0.5 * H / (normK + 1e-3)`` of one binary pattern matrix ``x`` (B, N)."""
    x = (x.detach().reshape(x.shape[0], -1) > 0).double()
    n = x.shape[1]
    p = x.mean(1, keepdim=True)
    norm = n * (p @ (1 - p).T + (1 - p) @ p.T)
    ham = x @ (1 - x).T + (1 - x) @ x.T
    return n - 0.5 * ham / (norm + 1e-3)


class KernelRecorder:
    """Context manager: hooks every spikingjelly neuron of ``model`` and accumulates :attr:`K` (B x B).

    Single-step neurons report one timestep per call, multi-step ones ``[T, B, ...]`` per call; both
    count once per timestep. :attr:`layers` counts the (neuron, timestep) contributions.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.K: torch.Tensor | None = None
        self.layers = 0
        self._hooks = []

    def _hook(self, module, inp, out):
        if isinstance(out, tuple):
            out = out[0]
        steps = out if module.step_mode == "m" else out.unsqueeze(0)
        for s in steps:
            k = hamming_kernel(s).cpu()
            self.K = k if self.K is None else self.K + k
            self.layers += 1

    def __enter__(self):
        self.K, self.layers = None, 0
        for m in self.model.modules():
            if isinstance(m, neuron.BaseNode):
                self._hooks.append(m.register_forward_hook(self._hook))
        return self

    def __exit__(self, *exc):
        for h in self._hooks:
            h.remove()
        self._hooks = []


def logabsdet(K: torch.Tensor) -> float:
    """``log|det K|``; ``-inf`` for a singular kernel (two samples the network cannot tell apart)."""
    sign, ld = torch.linalg.slogdet(K.double())
    return float(ld) if float(sign) != 0.0 else -math.inf


@torch.no_grad()
def score_model(model: nn.Module, batches) -> float:
    """Mean over ``batches`` (input tensors on the model's device) of ``log|det K|``.

    BN uses batch statistics (train mode), as at initialisation in the published search; dropout is
    switched off so that the score depends only on the model and the batches. The model's modes are
    restored afterwards.
    """
    modes = {m: m.training for m in model.modules()}
    model.train()
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.eval()
    try:
        scores = []
        for x in batches:
            with KernelRecorder(model) as rec:
                model(x)
            scores.append(logabsdet(rec.K) if rec.K is not None else -math.inf)
    finally:
        for m, t in modes.items():
            m.training = t
    return float(np.mean(scores))


@dataclass
class Candidate:
    """One scored cell: draw ``index`` (seeds its initialisation), ``matrix``, ``score``."""

    index: int
    matrix: CellMatrix
    score: float

    def to_dict(self) -> dict:
        return {"index": self.index, "cnt_mat": str(self.matrix),
                "score": self.score if math.isfinite(self.score) else None,
                "edges": self.matrix.describe()}


def candidate_seed(seed: int, index: int) -> int:
    """Torch seed of candidate ``index``: its initialisation does not depend on the others."""
    return (seed * 1_000_003 + index) % 2**63


def draw_candidates(num: int, seed: int) -> list[CellMatrix]:
    """``num`` distinct random valid cells, reproducible from ``seed`` (fewer if the space runs out)."""
    rng = np.random.default_rng(seed)
    seen, out = set(), []
    misses = 0
    while len(out) < num and misses < 10_000:
        m = random_cell(rng)
        if m.rows in seen:
            misses += 1
            continue
        seen.add(m.rows)
        out.append(m)
    return out


def search(build, batches, *, num_search: int, seed: int = 0, device="cpu", progress: bool = True,
           candidates: list[CellMatrix] | None = None) -> list[Candidate]:
    """Score ``num_search`` random cells and return them ranked, best first (ties: earlier draw first).

    Parameters
    ----------
    build : callable
        ``build(matrix) -> nn.Module``; called after seeding torch with :func:`candidate_seed`.
    batches : list of torch.Tensor
        Input batches, the same for every candidate.
    candidates : list of CellMatrix, optional
        Score these instead of drawing random ones.
    """
    from tqdm import tqdm

    device = torch.device(device)
    cells = candidates if candidates is not None else draw_candidates(num_search, seed)
    batches = [b.to(device) for b in batches]
    scored = []
    best = -math.inf
    bar = tqdm(cells, desc="search", disable=not progress, mininterval=2.0)
    for i, m in enumerate(bar):
        torch.manual_seed(candidate_seed(seed, i))
        model = build(m).to(device)
        s = score_model(model, batches)
        scored.append(Candidate(i, m, s))
        best = max(best, s)
        bar.set_postfix(best=f"{best:.2f}")
    return sorted(scored, key=lambda c: (-c.score if math.isfinite(c.score) else math.inf, c.index))


def timed_search(*args, **kwargs) -> tuple[list[Candidate], float]:
    t0 = time.time()
    res = search(*args, **kwargs)
    return res, time.time() - t0
