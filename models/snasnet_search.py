"""SNASNet search without training (spec/snn.md section 5): rank random cells by the log-determinant
of a spike-pattern kernel measured at initialisation, optionally together with their LoAS cost.

For a batch of B samples, every LIF output at every timestep is binarised and flattened to a pattern
x (B x N). With H the Hamming distances between the samples' patterns and p their firing rates, each
(LIF, timestep) adds one term to the kernel (the official ``model_snn.py`` formula)::

    K += N - 0.5 * H / (p_a (1 - p_b) + (1 - p_a) p_b + 1e-3)

and the score is ``log|det(K / number of terms)|``, averaged over the batches. Networks whose LIFs
separate the inputs well score high. H comes from one float32 Gram matrix of the binary patterns
(``H = n_a + n_b - 2 x_a.x_b``, exact: every count is an integer below 2**24); the kernel itself is
float64, so a fixed model and batch give the same score every time.

The per-candidate work is :func:`score_candidate`, a plain function of picklable arguments (a
distributed engine can run it anywhere); :func:`search` runs it over the drawn cells and streams
each result to a JSON-lines file, so a killed search resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from spikingjelly.activation_based import functional, layer, neuron

from sim.errors import UserError

from .snasnet import CellMatrix, sample_cell


def pattern_counts(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(G, n, N)`` of binary patterns ``x`` ``[S, B, ...]`` (S timesteps): the Gram matrices
    ``G[s] = x_s x_s^T`` ``[S, B, B]``, the spike counts ``n`` ``[S, B]`` and the pattern length N."""
    S, B = x.shape[:2]
    x = x.detach().reshape(S, B, -1)
    N = x.shape[2]
    dtype = torch.float32 if N < 2**24 else torch.float64
    xb = (x > 0).to(dtype)
    return torch.bmm(xb, xb.transpose(1, 2)).double(), xb.sum(2).double(), N


def hamming_kernel(x: torch.Tensor) -> torch.Tensor:
    """Kernel term of one binary pattern matrix ``x`` ``(B, ...)`` (the official formula)."""
    return hamming_kernels(x.unsqueeze(0)).sum(0)


def hamming_kernels(x: torch.Tensor) -> torch.Tensor:
    """Kernel terms ``[S, B, B]`` of ``x`` ``[S, B, ...]``, one per leading index (timestep)."""
    G, n, N = pattern_counts(x)
    ham = n[:, :, None] + n[:, None, :] - 2.0 * G
    p = n / N
    norm = p[:, :, None] * (1 - p[:, None, :]) + (1 - p[:, :, None]) * p[:, None, :]
    return N - 0.5 * ham / (norm + 1e-3)


class KernelRecorder:
    """Context manager: hooks every spikingjelly neuron of ``model`` and accumulates :attr:`K` (B x B).

    A multi-step neuron reports ``[T', B, ...]`` per call (T' >= 1 timesteps), a single-step one
    ``[B, ...]``; each timestep is one term. :attr:`terms` counts the (neuron, timestep) terms.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        self.K: torch.Tensor | None = None
        self.terms = 0
        self._hooks = []

    @property
    def layers(self) -> int:  # the older name of :attr:`terms`
        return self.terms

    def _hook(self, module, inp, out):
        if isinstance(out, tuple):
            out = out[0]
        steps = out if module.step_mode == "m" else out.unsqueeze(0)
        k = hamming_kernels(steps).sum(0).cpu()
        self.K = k if self.K is None else self.K + k
        self.terms += steps.shape[0]

    def __enter__(self):
        self.K, self.terms = None, 0
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


class _SpikeTap:
    """Pre-hooks on a SNASNet's spike layers keeping sample 0's input spikes ``[T, ...]`` of the first
    forward call (for the hardware cost of the candidate)."""

    def __init__(self, model, batch: int):
        self.layers = model.spike_convs()
        self.batch, self.T = batch, model.T
        self.seen: dict[str, list[torch.Tensor]] = {n: [] for n, _, _ in self.layers}
        self.done = False
        self._hooks = [m.register_forward_pre_hook(self._hook(n)) for n, m, _ in self.layers]

    def _hook(self, name):
        def hook(mod, inp):
            if not self.done:
                x = inp[0].detach()
                self.seen[name].append(x.reshape(-1, self.batch, *x.shape[1:])[:, 0].cpu())
        return hook

    def close(self) -> dict[str, torch.Tensor]:
        for h in self._hooks:
            h.remove()
        return {n: torch.cat(v) for n, v in self.seen.items() if v}


@torch.no_grad()
def score_model(model: nn.Module, batches, *, dropout: bool = True, seed: int = 0, tap=None) -> float:
    """Mean over ``batches`` (input tensors on the model's device) of ``log|det(K / terms)|``.

    As in the official search the model runs in train mode (BN batch statistics) with dropout on
    (its masks drawn from ``seed``, so a model and batches give one score); ``dropout=False`` turns
    dropout off. The model's state is left as it was: train/eval modes, BN running statistics,
    neuron and dropout memories (reset), and the global torch RNG.
    """
    modes = {m: m.training for m in model.modules()}
    buffers = {k: v.clone() for k, v in model.state_dict().items()
               if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    last = getattr(model, "last_logits", None)
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    model.train()
    for m in model.modules():
        if not dropout and isinstance(m, (nn.Dropout, layer.Dropout)):
            m.eval()
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            scores = []
            for x in batches:
                with KernelRecorder(model) as rec:
                    model(x)
                if tap is not None:
                    tap.done = True
                scores.append(logabsdet(rec.K / rec.terms) if rec.K is not None else -math.inf)
    finally:
        for m, t in modes.items():
            m.training = t
        model.load_state_dict(buffers, strict=False)
        functional.reset_net(model)
        if hasattr(model, "last_logits"):
            model.last_logits = last
    return float(np.mean(scores))


@dataclass
class Candidate:
    """One scored cell: draw ``index`` (seeds its initialisation), ``matrix``, ``score`` and, with the
    hardware objective, ``hw`` (LoAS / SparTen-S cycles and energy of its spike layers)."""

    index: int
    matrix: CellMatrix
    score: float
    hw: dict | None = None

    def to_dict(self) -> dict:
        d = {"index": self.index, "cnt_mat": str(self.matrix),
             "score": self.score if math.isfinite(self.score) else None,
             "edges": self.matrix.describe()}
        if self.hw is not None:
            d.update(self.hw)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Candidate":
        from .snasnet import parse_cnt_mat

        hw = {k: d[k] for k in HW_FIELDS if k in d} or None
        s = d["score"]
        return cls(int(d["index"]), parse_cnt_mat(d["cnt_mat"]), -math.inf if s is None else float(s), hw)


#: the hardware fields of a candidate (:func:`hw_cost`).
HW_FIELDS = ("loas_cycles", "loas_energy_pj", "sparten_cycles", "sparten_energy_pj", "hw_layers")


def candidate_seed(seed: int, index: int) -> int:
    """Torch seed of candidate ``index``: its initialisation does not depend on the others."""
    return (seed * 1_000_003 + index) % 2**63


def draw_candidates(num: int, seed: int, sampler: str = "official", celltype: str = "backward") -> list[CellMatrix]:
    """``num`` distinct random valid cells, reproducible from ``seed`` (fewer if the space runs out).

    ``sampler`` and ``celltype``: see :func:`models.snasnet.sample_cell`.
    """
    rng = np.random.default_rng(seed)
    seen, out = set(), []
    misses = 0
    while len(out) < num and misses < 10_000:
        m = sample_cell(rng, sampler, celltype)
        if m.rows in seen:
            misses += 1
            continue
        seen.add(m.rows)
        out.append(m)
    return out


def hw_cost(spikes: dict[str, torch.Tensor], model, T: int) -> dict:
    """LoAS and SparTen-S cycles and energy of one sample through ``model``'s spike layers.

    ``spikes``: layer name -> input spikes ``[T, ...]`` (as :class:`_SpikeTap` keeps them). Weights
    are quantised as the export does (:func:`models.snasnet_export.quantize_layer`); the hardware is
    built for ``max(T, default timesteps)``.
    """
    from dataclasses import replace

    from sim.baselines import simulate
    from sim.config import LoASConfig
    from sim.fibers import pack_spikes
    from sim.trace import Geometry, im2col

    from .snasnet_export import quantize_layer

    cfg = replace(LoASConfig(), timesteps=max(T, LoASConfig().timesteps))
    mods = {n: (m, bn) for n, m, bn in model.spike_convs()}
    tot = {"loas_cycles": 0, "loas_energy_pj": 0.0, "sparten_cycles": 0, "sparten_energy_pj": 0.0}
    layers = {}
    for name, x in spikes.items():
        op, bn = mods[name]
        wq, _, _, _ = quantize_layer(op, bn)
        words = pack_spikes((x > 0).to(torch.uint8).numpy())
        if isinstance(op, nn.Conv2d):
            g = Geometry(c_in=op.in_channels, h=x.shape[-2], w=x.shape[-1], kernel=op.kernel_size[0],
                         stride=op.stride[0], padding=op.padding[0], c_out=op.out_channels)
            rows = im2col(words, g)
        else:
            g = Geometry.fc(op.in_features, op.out_features)
            rows = words.reshape(1, -1)
        wkn = np.ascontiguousarray(wq.reshape(g.N, g.K).T)
        per = {}
        for design in ("loas", "sparten"):
            r = simulate(design, rows, wkn, cfg, T=T, name=name)
            tot[f"{design}_cycles"] += int(r.cycles)
            tot[f"{design}_energy_pj"] += float(r.energy_total)
            per[design] = int(r.cycles)
        layers[name] = per
    return {**tot, "hw_layers": layers}


def score_candidate(build, batches, index: int, matrix: CellMatrix, *, seed: int, dropout: bool = True,
                    hw: bool = False, device="cpu") -> Candidate:
    """Score one cell: seed torch with :func:`candidate_seed`, build it, score it on ``batches``
    (a list of input tensors, or a callable ``index -> list`` for fresh batches per candidate) and,
    with ``hw``, measure the LoAS / SparTen-S cost of its spike layers on sample 0 of the first batch."""
    torch.manual_seed(candidate_seed(seed, index))
    model = build(matrix).to(device)
    xs = batches(index) if callable(batches) else batches
    xs = [b.to(device) for b in xs]
    tap = _SpikeTap(model, xs[0].shape[0]) if hw else None
    s = score_model(model, xs, dropout=dropout, seed=candidate_seed(seed, index), tap=tap)
    cost = hw_cost(tap.close(), model, model.T) if hw else None
    return Candidate(index, matrix, s, cost)


class ResultsFile:
    """Scored candidates streamed as JSON lines (first line: the settings), for resuming a search.

    Raises
    ------
    UserError
        If an existing file was written with other settings (naming the file and the field).
    """

    def __init__(self, path, settings: dict):
        self.path = Path(path)
        self.settings = settings
        self.done: dict[int, Candidate] = {}
        if self.path.exists() and self.path.stat().st_size:
            self._read()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._append({"settings": settings})

    def _read(self):
        text = self.path.read_text()
        lines = text.split("\n")
        good = 0  # bytes of complete, parseable lines: a line cut by a kill is dropped
        try:
            head = json.loads(lines[0])["settings"]
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{self.path}: field 'settings': not a loas nas search results file") from None
        for k, v in self.settings.items():
            if head.get(k) != v:
                raise UserError(f"{self.path}: field 'settings.{k}': {head.get(k)!r} in the file, {v!r} now "
                                f"(give another --results file or the same settings)")
        good = len(lines[0]) + 1
        for line in lines[1:]:
            if not line:
                break
            try:
                c = Candidate.from_dict(json.loads(line))
            except (ValueError, KeyError, TypeError):
                break
            self.done[c.index] = c
            good += len(line) + 1
        if good < len(text):
            with open(self.path, "r+") as f:
                f.truncate(good)

    def _append(self, obj):
        with open(self.path, "a") as f:
            f.write(json.dumps(obj) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def add(self, c: Candidate):
        self.done[c.index] = c
        self._append(c.to_dict())


def rank(scored) -> list[Candidate]:
    """Best first (ties: earlier draw first); -inf scores last."""
    return sorted(scored, key=lambda c: (-c.score if math.isfinite(c.score) else math.inf, c.index))


def search(build, batches, *, num_search: int, seed: int = 0, device="cpu", progress: bool = True,
           candidates: list[CellMatrix] | None = None, sampler: str = "official", celltype: str = "backward",
           dropout: bool = True, hw: bool = False, results: ResultsFile | None = None) -> list[Candidate]:
    """Score ``num_search`` random cells and return them ranked, best first (ties: earlier draw first).

    Parameters
    ----------
    build : callable
        ``build(matrix) -> nn.Module``; called after seeding torch with :func:`candidate_seed`.
    batches : list of torch.Tensor, or callable
        Input batches, the same for every candidate, or ``index -> list`` (fresh per candidate).
    candidates : list of CellMatrix, optional
        Score these instead of drawing random ones (:func:`draw_candidates`).
    results : ResultsFile, optional
        Candidates already in it are not scored again; new ones are appended as they finish.
    """
    from tqdm import tqdm

    device = torch.device(device)
    cells = candidates if candidates is not None else draw_candidates(num_search, seed, sampler, celltype)
    if not callable(batches):
        batches = [b.to(device) for b in batches]
    scored = []
    best = -math.inf
    done = results.done if results is not None else {}
    bar = tqdm(list(enumerate(cells)), desc="search", disable=not progress, mininterval=2.0)
    for i, m in bar:
        if i in done and str(done[i].matrix) == str(m):
            c = done[i]
        else:
            c = score_candidate(build, batches, i, m, seed=seed, dropout=dropout, hw=hw, device=device)
            if results is not None:
                results.add(c)
        scored.append(c)
        best = max(best, c.score)
        bar.set_postfix(best=f"{best:.2f}")
    return rank(scored)


def timed_search(*args, **kwargs) -> tuple[list[Candidate], float]:
    t0 = time.time()
    res = search(*args, **kwargs)
    return res, time.time() - t0


def pareto_front(cands: list[Candidate], cost: str = "loas_cycles") -> list[Candidate]:
    """The candidates no other beats on both score (higher) and ``cost`` (lower), by cost."""
    pts = sorted((c for c in cands if math.isfinite(c.score) and c.hw), key=lambda c: (c.hw[cost], -c.score))
    front, best = [], -math.inf
    for c in pts:
        if c.score > best:
            front.append(c)
            best = c.score
    return front


__all__ = ["Candidate", "KernelRecorder", "ResultsFile", "candidate_seed", "draw_candidates", "hamming_kernel",
           "hamming_kernels", "hw_cost", "logabsdet", "pareto_front", "rank", "score_candidate", "score_model",
           "search", "timed_search"]
