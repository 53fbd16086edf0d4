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

The per-candidate work is :func:`score_row`, a plain function of picklable arguments;
:func:`run_search` runs it on the Dask engine of :mod:`sim.dist` (an embedded local cluster, or a
cluster given by address), each finished candidate stored at once in a result store keyed by the
network, the batches, the candidate and the code, so a killed search resumes where it stopped.
:func:`search` scores in this process (library use, benchmarks).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from spikingjelly.activation_based import functional, layer, neuron

from sim.dist import keep_large_blocks
from sim.errors import UserError

from .data import Augment, Dataset
from .layers import fused_lifs
from .snasnet import CellMatrix, build_snasnet, parse_cnt_mat, sample_cell


def pattern_counts(x: torch.Tensor, binary: bool = False) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(G, n, N)`` of binary patterns ``x`` ``[S, B, ...]`` (S timesteps): the Gram matrices
    ``G[s] = x_s x_s^T`` ``[S, B, B]``, the spike counts ``n`` ``[S, B]`` and the pattern length N.
    ``binary``: ``x`` already holds only 0 and 1 (LIF spikes), so it is used as it is."""
    S, B = x.shape[:2]
    x = x.detach()
    if x.dim() > 3:  # flatten in memory order (a view): G and n do not depend on the order of N
        x = x.permute(0, 1, *sorted(range(2, x.dim()), key=lambda d: -x.stride(d)))
    x = x.reshape(S, B, -1)
    N = x.shape[2]
    dtype = torch.float32 if N < 2**24 else torch.float64  # integer sums exact in any order
    xb = x if binary and x.dtype == dtype else (x > 0).to(dtype)
    return torch.bmm(xb, xb.transpose(1, 2)).double(), xb.sum(2).double(), N


def hamming_kernel(x: torch.Tensor) -> torch.Tensor:
    """Kernel term of one binary pattern matrix ``x`` ``(B, ...)`` (the official formula)."""
    return hamming_kernels(x.unsqueeze(0)).sum(0)


def hamming_kernels(x: torch.Tensor, binary: bool = False) -> torch.Tensor:
    """Kernel terms ``[S, B, B]`` of ``x`` ``[S, B, ...]``, one per leading index (timestep);
    ``binary``: see :func:`pattern_counts`."""
    G, n, N = pattern_counts(x, binary)
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
        k = hamming_kernels(steps, binary=isinstance(module, neuron.LIFNode)).sum(0).cpu()
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
    dropout off. The LIFs run fused (:class:`models.layers.fused_lifs`: the same spikes, no
    autograd). The model's state is left as it was: train/eval modes, BN running statistics,
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
                with KernelRecorder(model) as rec, fused_lifs(model):
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
        hw = {k: d[k] for k in HW_FIELDS if k in d} or None
        s = d["score"]
        return cls(int(d["index"]), parse_cnt_mat(d["cnt_mat"]), -math.inf if s is None else float(s), hw)

    def to_row(self) -> dict:
        """A flat row for the result store (:class:`sim.dist.ResultStore`): ``hw_layers`` as JSON."""
        d = self.to_dict()
        if "hw_layers" in d:
            d["hw_layers"] = json.dumps(d["hw_layers"], sort_keys=True)
        return d

    @classmethod
    def from_row(cls, row: dict) -> "Candidate":
        d = dict(row)
        if isinstance(d.get("hw_layers"), str):
            d["hw_layers"] = json.loads(d["hw_layers"])
        return cls.from_dict(d)


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
    from sim.loas import fitted
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
            # LoAS: the accelerator with memories large enough for the layer (a dense classifier's
            # weights exceed the default B tile memory); its tiles and DRAM port as configured
            c = fitted(cfg, rows, wkn) if design == "loas" else cfg
            r = simulate(design, rows, wkn, c, T=T, name=name)
            tot[f"{design}_cycles"] += int(r.cycles)
            tot[f"{design}_energy_pj"] += float(r.energy_total)
            per[design] = int(r.cycles)
        layers[name] = per
    return {**tot, "hw_layers": layers}


def score_candidate(build, batches, index: int, matrix: CellMatrix, *, seed: int, dropout: bool = True,
                    hw: bool = False, device="cpu") -> Candidate:
    """Score one cell: seed torch with :func:`candidate_seed`, build it, score it on ``batches``
    (a list of input tensors, or a callable ``index -> list`` for fresh batches per candidate) and,
    with ``hw``, measure the LoAS / SparTen-S cost of its spike layers on sample 0 of the first batch.

    Sets this process's allocator to keep large blocks (:func:`sim.dist.keep_large_blocks`): each
    candidate allocates and frees the same layer-sized tensors."""
    keep_large_blocks()
    torch.manual_seed(candidate_seed(seed, index))
    model = build(matrix).to(device)
    xs = batches(index) if callable(batches) else batches
    xs = [b.to(device) for b in xs]
    tap = _SpikeTap(model, xs[0].shape[0]) if hw else None
    s = score_model(model, xs, dropout=dropout, seed=candidate_seed(seed, index), tap=tap)
    cost = hw_cost(tap.close(), model, model.T) if hw else None
    return Candidate(index, matrix, s, cost)


@dataclass(frozen=True)
class NetSpec:
    """The network every candidate cell is built into (:func:`models.snasnet.build_snasnet`):
    ``None`` sizes take the dataset's published defaults."""

    dataset: str
    channels: int | None = None
    T: int = 5
    second_avgpooling: int | None = None
    fc1_bias: bool = False
    init: str = "official"
    dropout: str = "sample"
    bn_stats: str = "timestep"

    def build(self, matrix) -> nn.Module:
        return build_snasnet(matrix, self.dataset, channels=self.channels, T=self.T,
                             second_avgpooling=self.second_avgpooling, fc1_bias=self.fc1_bias, init=self.init,
                             dropout=self.dropout, bn_stats=self.bn_stats)


@dataclass(frozen=True, eq=False)
class FreshBatches:
    """Fresh (augmented) training batches per candidate, as the official search draws them:
    ``self(index)`` -> ``batches`` batches of ``batch_size`` images of ``dataset``, shuffled and
    augmented from :func:`candidate_seed` ``(seed, index)``. Picklable, so the dataset is sent to
    the workers once."""

    dataset: Dataset
    batch_size: int
    batches: int
    seed: int
    augment: Augment | None = None

    def __call__(self, index: int) -> list[torch.Tensor]:
        from .data import batches

        it = batches(self.dataset, self.batch_size, shuffle=True, seed=candidate_seed(self.seed, index),
                     augment=self.augment)
        return [x for _, (x, _) in zip(range(self.batches), it)]


def resolve_device(device) -> torch.device:
    """``auto`` = CUDA if this process sees a GPU, else the CPU; anything else as torch names it."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def score_row(spec: NetSpec, batches, index: int, cnt_mat: str, seed: int, dropout: bool = True,
              hw: bool = False, threads: int | None = 1, device="cpu") -> dict:
    """One candidate as a flat row (:meth:`Candidate.to_row`): the task a worker of
    :func:`run_search` runs. ``threads``: torch threads of this process (None = leave as is);
    ``device`` may be ``auto`` (resolved on the worker)."""
    if threads:
        torch.set_num_threads(threads)
    c = score_candidate(spec.build, batches, index, parse_cnt_mat(cnt_mat), seed=seed, dropout=dropout, hw=hw,
                        device=resolve_device(device))
    return c.to_row()


def run_search(spec: NetSpec, batches, cells: list[CellMatrix], *, seed: int, dropout: bool = True,
               hw: bool = False, store=None, scheduler: str | None = None, workers: int | None = None,
               threads: int | None = 1, device="cpu", progress: bool = True):
    """Score ``cells`` on the Dask engine (:func:`sim.dist.run_tasks`), one task per candidate.

    ``batches``: a list of input tensors (the same for every candidate) or a :class:`FreshBatches`;
    sent to the workers once. With ``store`` (a :class:`sim.dist.ResultStore`) every scored cell is
    stored as it arrives under a key of (``spec``, the batches' content, ``seed``, the draw index and
    cell, ``dropout``, ``hw``, the torch threads and the device -- a conv's float sums, hence a
    score's last digits, depend on them -- and the code of ``sim`` and ``models``): a rerun scores
    only the cells missing there.

    Returns ``(ranked candidates, outcome)``; a candidate whose task failed is absent from the ranking
    and listed in ``outcome.failures`` with its index and cell.
    """
    from sim import dist

    version = dist.code_version("sim", "models")
    data = dist.digest(batches)
    shared = dist.Shared(batches)
    tasks = []
    for i, m in enumerate(cells):
        key = dist.digest("snasnet-score", spec, data, seed, i, str(m), dropout, hw, threads, str(device), version)
        tasks.append(dist.Task(key, score_row, (spec, shared, i, str(m), seed, dropout, hw, threads, str(device)),
                               {"index": i, "cnt_mat": str(m)}))
    oc = dist.run_tasks(tasks, store=store, scheduler=scheduler, workers=workers, progress=progress,
                        desc="search", packages=("sim", "models"))
    ranked = rank(Candidate.from_row(oc.results[t.key]) for t in tasks if t.key in oc.results)
    return ranked, oc


def rank(scored) -> list[Candidate]:
    """Best first (ties: earlier draw first); -inf scores last."""
    return sorted(scored, key=lambda c: (-c.score if math.isfinite(c.score) else math.inf, c.index))


def search(build, batches, *, num_search: int, seed: int = 0, device="cpu", progress: bool = True,
           candidates: list[CellMatrix] | None = None, sampler: str = "official", celltype: str = "backward",
           dropout: bool = True, hw: bool = False) -> list[Candidate]:
    """Score ``num_search`` random cells in this process and return them ranked, best first (ties:
    earlier draw first). :func:`run_search` does the same on the distributed engine, resumably.

    Parameters
    ----------
    build : callable
        ``build(matrix) -> nn.Module``; called after seeding torch with :func:`candidate_seed`.
    batches : list of torch.Tensor, or callable
        Input batches, the same for every candidate, or ``index -> list`` (fresh per candidate).
    candidates : list of CellMatrix, optional
        Score these instead of drawing random ones (:func:`draw_candidates`).
    """
    from tqdm import tqdm

    device = torch.device(device)
    cells = candidates if candidates is not None else draw_candidates(num_search, seed, sampler, celltype)
    if not callable(batches):
        batches = [b.to(device) for b in batches]
    scored = []
    best = -math.inf
    bar = tqdm(list(enumerate(cells)), desc="search", disable=not progress, mininterval=2.0)
    for i, m in bar:
        c = score_candidate(build, batches, i, m, seed=seed, dropout=dropout, hw=hw, device=device)
        scored.append(c)
        best = max(best, c.score)
        bar.set_postfix(best=f"{best:.2f}")
    return rank(scored)


#: check_target / replace_dir arguments of a search report directory (it also holds the result store).
SEARCH_FILES = ("search.csv", "search.json", "pareto.png")
SEARCH_TARGET = dict(what="search report", owned=(SEARCH_FILES + ("store",)).__contains__)


def write_search_report(out, obj: dict, plot=None) -> list:
    """``search.csv`` (the ranked cells), ``search.json`` (``obj``, what ``loas nas search --json``
    prints) and, given ``plot`` (a function of the PNG path), ``pareto.png``, under ``out``: the
    folder written whole (:func:`sim.atomic.replace_dir`) with the result store (``store/``) carried
    over, so a rerun still resumes from it. Returns the files' paths."""
    import csv
    import io
    from pathlib import Path

    from sim.atomic import replace_dir

    out = Path(out)
    cols = ["rank", "index", "cnt_mat", "score", "edges"]
    cols += [k for k in ("loas_cycles", "loas_energy_pj", "sparten_cycles", "sparten_energy_pj")
             if obj["candidates"] and k in obj["candidates"][0]]
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    w.writerows(obj["candidates"])
    names = ["search.csv", "search.json"] + (["pareto.png"] if plot else [])
    with replace_dir(out, **SEARCH_TARGET, keep=("store",)) as tmp:
        (tmp / "search.csv").write_text(buf.getvalue())
        (tmp / "search.json").write_text(json.dumps(obj, indent=2) + "\n")
        if plot:
            plot(tmp / "pareto.png")
    return [out / n for n in names]


def pareto_front(cands: list[Candidate], cost: str = "loas_cycles") -> list[Candidate]:
    """The candidates no other beats on both score (higher) and ``cost`` (lower), by cost."""
    pts = sorted((c for c in cands if math.isfinite(c.score) and c.hw), key=lambda c: (c.hw[cost], -c.score))
    front, best = [], -math.inf
    for c in pts:
        if c.score > best:
            front.append(c)
            best = c.score
    return front


__all__ = ["Candidate", "FreshBatches", "KernelRecorder", "NetSpec", "candidate_seed", "draw_candidates",
           "hamming_kernel", "hamming_kernels", "hw_cost", "logabsdet", "pareto_front", "rank", "resolve_device",
           "run_search", "score_candidate", "score_model", "score_row", "search", "write_search_report"]
