"""SNASNet (Kim et al., ECCV 2022): spiking cells with forward and backward (next-timestep) edges.

A cell has four nodes: 0 = cell input, 1, 2, 3 = cell output. It is written as a 4x4 connection
matrix, one string per row, one digit per column (``0302 0030 3003 0000``); row = source, column =
destination (spec/snn.md section 5). The upper triangle holds forward edges, the lower triangle
backward edges, whose output is added to the destination node's input at the *next* timestep. The
diagonal is ignored. Operation codes: :data:`OPS`.

Per timestep, with ``v_j = x_j + b_j`` the value of node j (``b_3 = 0``)::

    x1 = op01(v0);  x2 = op02(v0) + op12(v1);  x3 = op03(v0) + op13(v1) + op23(v2)
    b0 <- op10(v1) + op20(v2) + op30(v3);  b1 <- op21(v2) + op31(v3);  b2 <- op32(v3)

All backward state starts at zero for every sample (every forward call). A LIF inside an edge op is
that op's own neuron; every network LIF is the project's (tau 4/3, hard reset, ATan surrogate).

The macro network (:class:`SNASNet`)::

    stem conv3x3 + BN (direct encoding, computed once, repeated over T)
    -> cell1 (C) -> BN, LIF, conv3x3 C->2C, BN -> avgpool 2 -> cell2 (2C) -> BN, LIF
    -> avgpool(second_avgpooling) -> dropout 0.5 -> linear -> 1024 -> LIF
    -> linear -> classes*k, averaged in groups of k; the logits are averaged over T.

Cells run timestep by timestep (their backward state is a recurrence); the layers between cells fold
T into the batch (LoAS's temporal-parallel execution), which computes the same values in eval mode.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from spikingjelly.activation_based import functional, layer

from sim.errors import UserError

from .layers import check_T, init_weights, make_lif, seq_apply

#: operation code -> name.
OPS = {0: "none", 1: "identity", 2: "lif-conv1x1-bn", 3: "lif-conv3x3-bn", 4: "avgpool3x3"}
#: the ops holding a conv, i.e. whose conv is a LoAS spike layer (its input is LIF spikes).
CONV_OPS = (2, 3)
#: the published cells (spec/snn.md section 5).
PUBLISHED = {
    "cifar100": "0302 0030 3003 0000",
    "cifar10": "0303 0030 2002 0200",
}
#: forward edges in the order a timestep evaluates them, then backward edges.
FORWARD_ORDER = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
BACKWARD_ORDER = ((1, 0), (2, 0), (3, 0), (2, 1), (3, 1), (3, 2))


class CellMatrixError(UserError, ValueError):
    """A connection matrix is malformed or describes an invalid cell (the message says which/why)."""


@dataclass(frozen=True)
class CellMatrix:
    """A validated 4x4 SNASNet connection matrix.

    Build one with :func:`parse_cnt_mat` (from strings) or ``CellMatrix(rows)`` (from integers).

    Parameters
    ----------
    rows : tuple of 4 tuples of 4 ints
        ``rows[src][dst]`` is the operation code (:data:`OPS`) of the edge src -> dst.
    option : str
        Name used in error messages (the command-line option the matrix came from).

    Raises
    ------
    CellMatrixError
        On a wrong shape, an unknown operation code, a missing 0->3 edge, or an intermediate node
        that has edges but is cut off from node 0 or from node 3.
    """

    rows: tuple
    option: str = "--cnt-mat"

    def __post_init__(self):
        rows = tuple(tuple(int(v) for v in r) for r in self.rows)
        object.__setattr__(self, "rows", rows)
        text = " ".join("".join(str(v) for v in r) for r in rows)
        if len(rows) != 4 or any(len(r) != 4 for r in rows):
            raise CellMatrixError(f"{self.option} {text}: expected 4 rows of 4 digits")
        for i, j in itertools.product(range(4), range(4)):
            if rows[i][j] not in OPS:
                raise CellMatrixError(
                    f"{self.option} {text}: row {i} column {j}: operation code {rows[i][j]} is not one of 0..4")
        if rows[0][3] == 0:
            raise CellMatrixError(
                f"{self.option} {text}: the forward edge 0->3 (row 0, column 3) is missing; every cell needs it")
        edges = self.edges()
        reach0 = _reachable(0, [(s, d) for s, d in edges])
        reach3 = _reachable(3, [(d, s) for s, d in edges])
        for n in (1, 2):
            if not any(n in e for e in edges):
                continue
            if n not in reach0:
                raise CellMatrixError(f"{self.option} {text}: node {n} has edges but is cut off from node 0 "
                                      f"(nothing reaches it from the cell input)")
            if n not in reach3:
                raise CellMatrixError(f"{self.option} {text}: node {n} has edges but is cut off from node 3 "
                                      f"(no path leads from it to the cell output)")

    def __str__(self) -> str:
        return " ".join("".join(str(v) for v in r) for r in self.rows)

    def op(self, src: int, dst: int) -> int:
        """Operation code of the edge src -> dst (0 on the diagonal, which is ignored)."""
        return 0 if src == dst else self.rows[src][dst]

    def edges(self) -> list[tuple[int, int]]:
        """Every (src, dst) with an operation, forward edges first, in evaluation order."""
        return [e for e in FORWARD_ORDER + BACKWARD_ORDER if self.op(*e)]

    def forward_edges(self) -> list[tuple[int, int, int]]:
        """(src, dst, op) of the forward edges, in evaluation order."""
        return [(s, d, self.op(s, d)) for s, d in FORWARD_ORDER if self.op(s, d)]

    def backward_edges(self) -> list[tuple[int, int, int]]:
        """(src, dst, op) of the backward edges."""
        return [(s, d, self.op(s, d)) for s, d in BACKWARD_ORDER if self.op(s, d)]

    def describe(self) -> str:
        """One line: the edges with their operations, e.g. ``fwd 0->1 lif-conv3x3-bn, ...``."""
        parts = [f"fwd {s}->{d} {OPS[o]}" for s, d, o in self.forward_edges()]
        parts += [f"bwd {s}->{d} {OPS[o]}" for s, d, o in self.backward_edges()]
        return ", ".join(parts)


def _reachable(start: int, edges) -> set[int]:
    seen, todo = {start}, [start]
    while todo:
        n = todo.pop()
        for s, d in edges:
            if s == n and d not in seen:
                seen.add(d)
                todo.append(d)
    return seen


def parse_cnt_mat(value, option: str = "--cnt-mat") -> CellMatrix:
    """Parse ``"0302 0030 3003 0000"``, ``["0302", "0030", "3003", "0000"]`` or
    ``["0302 0030 3003 0000"]`` (one quoted command-line argument) into a :class:`CellMatrix`.

    Raises
    ------
    CellMatrixError
        Naming ``option``, the offending row or digit and what is expected.
    """
    # one string "0302 0030 3003 0000", its rows as separate strings, or a mix of both
    rows = (value if isinstance(value, str) else " ".join(str(r) for r in value)).split()
    text = " ".join(rows)
    if len(rows) != 4:
        raise CellMatrixError(f"{option} {text}: expected 4 rows of 4 digits (e.g. 0302 0030 3003 0000), "
                              f"got {len(rows)} row(s)")
    for i, r in enumerate(rows):
        if len(r) != 4:
            raise CellMatrixError(f"{option} {text}: row {i} {r!r} has {len(r)} characters, expected 4 digits")
        for j, ch in enumerate(r):
            if ch not in "01234":
                raise CellMatrixError(f"{option} {text}: row {i} column {j}: {ch!r} is not an operation code 0..4")
    return CellMatrix(tuple(tuple(int(ch) for ch in r) for r in rows), option)


#: cell samplers of the search (:func:`sample_cell`).
SAMPLERS = ("official", "redraw")
#: cell types of the search: ``backward`` draws forward or backward edges, ``forward`` forward only.
CELLTYPES = ("backward", "forward")


def _draw_rows(rng: np.random.Generator, celltype: str) -> list[list[int]]:
    """One raw draw: each node pair gets a forward or (``backward`` cells, p = 1/2) a backward edge
    with a uniform operation code 0..4."""
    rows = [[0] * 4 for _ in range(4)]
    for s, d in FORWARD_ORDER:
        op = int(rng.integers(0, 5))
        if celltype == "forward" or rng.random() < 0.5:
            rows[s][d] = op
        else:
            rows[d][s] = op
    return rows


def prune_cut_off(rows) -> list[list[int]]:
    """Remove (zero the row and column of) every node cut off from node 0 or from node 3.

    Reachability is that of the drawn matrix (forward and backward edges both count), as in the
    official search: a node is kept when a path leads from node 0 to it and from it to node 3.
    """
    rows = [list(r) for r in rows]
    edges = [(s, d) for s in range(4) for d in range(4) if s != d and rows[s][d]]
    reach0 = _reachable(0, edges)
    reach3 = _reachable(3, [(d, s) for s, d in edges])
    for n in range(4):
        if n not in reach0 or n not in reach3:
            for k in range(4):
                rows[n][k] = rows[k][n] = 0
    return rows


def sample_cell(rng: np.random.Generator, sampler: str = "official", celltype: str = "backward",
                max_tries: int = 10000) -> CellMatrix:
    """A random valid cell.

    Parameters
    ----------
    sampler : str
        ``official`` (the published search): draw, prune the nodes cut off from node 0 or node 3
        (:func:`prune_cut_off`), redraw only when the 0->3 edge is missing. ``redraw``: redraw the
        whole cell until it is valid as drawn (a different mix of the same cells: more edges).
    celltype : str
        ``backward`` (forward or backward edge per pair) or ``forward`` (forward edges only).

    Raises
    ------
    ValueError
        On an unknown sampler or cell type.
    RuntimeError
        If no valid cell was drawn in ``max_tries`` attempts (cannot happen with a sane generator).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if celltype not in CELLTYPES:
        raise ValueError(f"celltype must be one of {CELLTYPES}, got {celltype!r}")
    for _ in range(max_tries):
        rows = _draw_rows(rng, celltype)
        if sampler == "official":
            rows = prune_cut_off(rows)
        try:
            return CellMatrix(tuple(tuple(r) for r in rows))
        except CellMatrixError:
            continue
    raise RuntimeError(f"no valid cell in {max_tries} random draws")


def random_cell(rng: np.random.Generator, max_tries: int = 10000) -> CellMatrix:
    """A random valid cell drawn by the ``redraw`` sampler (:func:`sample_cell`)."""
    return sample_cell(rng, "redraw", "backward", max_tries)


def _conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv`` on ``[B, C, H, W]`` in channels-last layout (oneDNN runs it about twice as fast)."""
    return conv(x.contiguous(memory_format=torch.channels_last))


def bn_seq(bn: nn.BatchNorm2d, x: torch.Tensor, per_timestep: bool) -> torch.Tensor:
    """``bn`` on ``[T, B, ...]``. In train mode with ``per_timestep`` each timestep gets its own batch
    statistics (and updates the running statistics once, as the official per-timestep model does);
    otherwise T is folded into the batch (identical in eval mode). Without autograd (and hooks on
    ``bn``) the per-timestep outputs are written in place rather than stacked."""
    if bn.training and per_timestep:
        if torch.is_grad_enabled() or bn._forward_hooks or bn._forward_pre_hooks:  # autograd, or hooks to call
            return torch.stack([bn(x[t]) for t in range(x.shape[0])])
        out = torch.empty_like(x)
        for t in range(x.shape[0]):
            _bn_train_into(bn, x[t], out[t])
        return out
    return seq_apply(bn, x)


def _bn_train_into(bn: nn.BatchNorm2d, x: torch.Tensor, out: torch.Tensor) -> None:
    """``out[:] = bn(x)`` for a BN in train mode without autograd: the kernel nn.BatchNorm2d runs
    (the same values and running-statistics update), written in place instead of stacked."""
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:
            factor = 1.0 / float(bn.num_batches_tracked)
    stats = (bn.running_mean, bn.running_var) if bn.track_running_stats else (None, None)
    n = x.shape[1]
    torch.ops.aten.native_batch_norm.out(x, bn.weight, bn.bias, *stats, True, factor, bn.eps, out=out,
                                         save_mean=x.new_empty(n), save_invstd=x.new_empty(n))


class EdgeOp(nn.Module):
    """One edge operation of a cell, applied to ``[T', B, C, H, W]`` (T' timesteps at once, or 1).

    Parameters
    ----------
    code : int
        1 identity, 2 LIF -> conv1x1 -> BN, 3 LIF -> conv3x3 (pad 1) -> BN, 4 avgpool 3x3 (stride 1,
        pad 1). The LIF is multi-step and keeps its membrane between calls (reset per sample by
        :func:`spikingjelly.activation_based.functional.reset_net`), so calling it once on T steps
        or T times on one step computes the same spikes.
    channels : int
    bn_per_timestep : bool
        BN batch statistics per timestep in train mode (:func:`bn_seq`).

    Raises
    ------
    ValueError
        For code 0 (no edge) or an unknown code.
    """

    def __init__(self, code: int, channels: int, bn_per_timestep: bool = True):
        super().__init__()
        if code not in (1, 2, 3, 4):
            raise ValueError(f"edge operation code must be 1..4, got {code!r}")
        self.code = code
        self.bn_per_timestep = bn_per_timestep
        if code in CONV_OPS:
            k = 1 if code == 2 else 3
            self.lif = make_lif()
            self.conv = nn.Conv2d(channels, channels, k, 1, k // 2, bias=False)
            self.bn = nn.BatchNorm2d(channels)
        elif code == 4:
            self.pool = nn.AvgPool2d(3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.code == 1:
            return x
        if self.code == 4:
            if x.dim() == 5 and x.stride(0) == 0:  # the same map at every step (cell 1's input): pool it once
                return self.pool(x[0]).unsqueeze(0).expand(x.shape)
            return seq_apply(self.pool, x)
        y = seq_apply(lambda z: _conv(self.conv, z), self.lif(x))
        return bn_seq(self.bn, y, self.bn_per_timestep)


class SNASCell(nn.Module):
    """A SNASNet cell on ``[T, B, C, H, W]`` (channels in = channels out).

    Edge modules are named ``f01`` (forward 0->1), ``b20`` (backward 2->0), ... in ``self.ops``.

    Every edge whose source node does not depend on the backward recurrence (no backward edge into
    it or into a node it depends on) runs once on all T timesteps (T folded into the conv batch);
    only the edges leaving recurrent nodes run timestep by timestep. Both orders compute the same
    values (an edge's LIF is its own state).

    Parameters
    ----------
    matrix : CellMatrix
    channels : int
    bn_per_timestep : bool
        See :class:`EdgeOp`.
    """

    def __init__(self, matrix: CellMatrix, channels: int, bn_per_timestep: bool = True):
        super().__init__()
        self.matrix = matrix
        self.ops = nn.ModuleDict()
        for s, d, code in matrix.forward_edges():
            self.ops[f"f{s}{d}"] = EdgeOp(code, channels, bn_per_timestep)
        for s, d, code in matrix.backward_edges():
            self.ops[f"b{s}{d}"] = EdgeOp(code, channels, bn_per_timestep)
        rec = set()
        for n in range(4):
            if any(matrix.op(s, n) for s in range(n + 1, 4)) or any(matrix.op(s, n) and s in rec for s in range(n)):
                rec.add(n)
        self.recurrent = frozenset(rec)

    @staticmethod
    def edge_name(src: int, dst: int) -> str:
        return f"{'f' if src < dst else 'b'}{src}{dst}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[0]
        rec = self.recurrent
        zero = torch.zeros_like(x)
        # Values of the non-recurrent nodes (all T), and the outputs of the edges leaving them.
        v = {0: x} if 0 not in rec else {}
        pre: dict[tuple[int, int], torch.Tensor] = {}
        for n in range(1, 4):
            if n in rec:
                continue
            acc = None  # the sum of the node's inputs (no pass over a zero tensor first)
            for s in range(n):
                if self.matrix.op(s, n):
                    pre[(s, n)] = self.ops[self.edge_name(s, n)](v[s])
                    acc = pre[(s, n)] if acc is None else acc + pre[(s, n)]
            v[n] = zero if acc is None else acc
        for s in list(v):
            for d in range(4):
                if d != s and self.matrix.op(s, d) and (s, d) not in pre:
                    pre[(s, d)] = self.ops[self.edge_name(s, d)](v[s])
        if not rec:
            return v[3]
        # The recurrent nodes, timestep by timestep: a backward edge's output feeds the next step.
        # The output in the inputs' channels-last layout (torch.cat of the steps would return it
        # contiguous, and the next BN and LIF then run several times slower).
        out = torch.empty((T * x.shape[1], *x.shape[2:]), dtype=x.dtype, device=x.device,
                          memory_format=torch.channels_last).view(x.shape) if x.dim() == 5 else torch.empty_like(x)
        prev: dict[tuple[int, int], torch.Tensor] = {}
        for t in range(T):
            vt = {s: v[s][t:t + 1] for s in v}
            for n in sorted(rec):
                acc = x[t:t + 1] if n == 0 else zero[t:t + 1]
                for s in range(n):
                    if self.matrix.op(s, n):
                        acc = acc + (pre[(s, n)][t:t + 1] if (s, n) in pre else self.ops[self.edge_name(s, n)](vt[s]))
                if t > 0:
                    for s in range(n + 1, 4):
                        if self.matrix.op(s, n):
                            acc = acc + (pre[(s, n)][t - 1:t] if (s, n) in pre else prev[(s, n)])
                vt[n] = acc
            # Backward ops run at the last timestep too (their LIFs fire; the official model does).
            for s in sorted(rec):
                for d in range(s):
                    if self.matrix.op(s, d):
                        prev[(s, d)] = self.ops[self.edge_name(s, d)](vt[s])
            out[t] = vt[3][0]
        return out


def default_group(classes: int) -> int:
    """Outputs per class of the classifier: 10 (CIFAR-10: 100 -> 10), 5 above 10 classes (500 -> 100)."""
    return 10 if classes <= 10 else 5


#: initialisations: ``official`` (kaiming_uniform a=2 convs, Linear N(0, 0.01), zero biases, BN 1/0)
#: or ``torch`` (the framework defaults).
INITS = ("official", "torch")
#: dropout before fc1: ``sample`` (spikingjelly ``layer.Dropout``: one mask per sample for all T,
#: the official model) or ``timestep`` (``nn.Dropout``: a new mask every timestep).
DROPOUTS = ("sample", "timestep")
#: BN statistics in train mode: ``timestep`` (per timestep, the official model) or ``folded`` (over
#: T x B). Eval mode is the same for both.
BN_STATS = ("timestep", "folded")
#: options of a network saved before they existed (fc1 with a bias, per-timestep dropout, folded BN).
LEGACY_OPTIONS = dict(fc1_bias=True, init="torch", dropout="timestep", bn_stats="folded")


def official_init(model: nn.Module) -> None:
    """The official SNASNet initialisation: kaiming_uniform (a = 2) convs, Linear weights N(0, 0.01),
    zero biases, BN weight 1 and bias 0."""
    init_weights(model, lambda w: nn.init.kaiming_uniform_(w, a=2))


class SNASNet(nn.Module):
    """The SNASNet macro network built from one cell matrix (both cells share the matrix).

    Parameters
    ----------
    matrix : CellMatrix or str
        The cell (a string is parsed with :func:`parse_cnt_mat`).
    channels : int
        C: cell1 runs at C channels, cell2 at 2C (published: 256 CIFAR-10, 128 CIFAR-100).
    in_shape : (int, int, int)
        Input image (C, H, W): (3, 32, 32) CIFAR, (1, 28, 28) Fashion-MNIST.
    classes : int
    T : int
        Timesteps (default 5).
    second_avgpooling : int
        Pool size after cell2 (published: 4 for CIFAR-10, 2 for CIFAR-100).
    group : int or None
        Classifier outputs per class, averaged (default :func:`default_group`).
    hidden : int
        Width of the hidden classifier layer (1024).
    fc1_bias : bool
        fc1 has a bias (official: no).
    init : str
        :data:`INITS` (default ``official``).
    dropout : str
        :data:`DROPOUTS` (default ``sample``, one mask per sample over T).
    bn_stats : str
        :data:`BN_STATS` (default ``timestep``, per-timestep batch statistics in train mode).

    Raises
    ------
    ValueError
        On a non-positive size, a bad T, an unknown option, or an image too small for the poolings.
    CellMatrixError
        On an invalid matrix string.

    Attributes
    ----------
    last_logits : torch.Tensor
        Per-timestep logits ``[T, B, classes]`` of the last forward call.
    """

    def __init__(self, matrix, channels: int = 128, in_shape=(3, 32, 32), classes: int = 10, T: int = 5,
                 second_avgpooling: int = 2, group: int | None = None, hidden: int = 1024, *,
                 fc1_bias: bool = False, init: str = "official", dropout: str = "sample",
                 bn_stats: str = "timestep"):
        super().__init__()
        if isinstance(matrix, str):
            matrix = parse_cnt_mat(matrix)
        for name, v in (("channels", channels), ("classes", classes), ("second_avgpooling", second_avgpooling),
                        ("hidden", hidden)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        for name, v, allowed in (("init", init, INITS), ("dropout", dropout, DROPOUTS),
                                 ("bn_stats", bn_stats, BN_STATS)):
            if v not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {v!r}")
        self.T = check_T(T)
        self.matrix = matrix
        self.group = group or default_group(classes)
        self.classes = classes
        c_in, h, w = (int(v) for v in in_shape)
        self.in_shape = (c_in, h, w)
        hp, wp = h // 2 // second_avgpooling, w // 2 // second_avgpooling
        if hp < 1 or wp < 1:
            raise ValueError(f"image {h}x{w} is too small for avgpool 2 then avgpool {second_avgpooling}")
        C = channels
        per_t = bn_stats == "timestep"
        self.bn_per_timestep = per_t
        self.config = dict(matrix=str(matrix), channels=C, in_shape=list(self.in_shape), classes=classes, T=T,
                           second_avgpooling=second_avgpooling, group=self.group, hidden=hidden,
                           fc1_bias=bool(fc1_bias), init=init, dropout=dropout, bn_stats=bn_stats)
        self.stem = nn.Sequential(nn.Conv2d(c_in, C, 3, 1, 1, bias=False), nn.BatchNorm2d(C))
        self.cell1 = SNASCell(matrix, C, per_t)
        self.down_bn = nn.BatchNorm2d(C)
        self.down_lif = make_lif()
        self.down_conv = nn.Conv2d(C, 2 * C, 3, 1, 1, bias=False)
        self.down_bn2 = nn.BatchNorm2d(2 * C)
        self.pool1 = nn.AvgPool2d(2, 2)
        self.cell2 = SNASCell(matrix, 2 * C, per_t)
        self.last_bn = nn.BatchNorm2d(2 * C)
        self.last_lif = make_lif()
        self.pool2 = nn.AvgPool2d(second_avgpooling, second_avgpooling)
        self.dropout = layer.Dropout(0.5, step_mode="m") if dropout == "sample" else nn.Dropout(0.5)
        self.fc1 = nn.Linear(2 * C * hp * wp, hidden, bias=bool(fc1_bias))
        self.fc1_lif = make_lif()
        self.fc2 = nn.Linear(hidden, classes * self.group)
        if init == "official":
            official_init(self)
        self.to(memory_format=torch.channels_last)
        self.last_logits: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        functional.reset_net(self)
        T, per_t = self.T, self.bn_per_timestep
        cur = self.stem(x.contiguous(memory_format=torch.channels_last))
        h = cur.unsqueeze(0).expand(T, *cur.shape)
        h = self.cell1(h)
        h = self.down_lif(bn_seq(self.down_bn, h, per_t))
        h = bn_seq(self.down_bn2, seq_apply(lambda z: _conv(self.down_conv, z), h), per_t)
        h = seq_apply(self.pool1, h)
        h = self.cell2(h)
        h = self.last_lif(bn_seq(self.last_bn, h, per_t))
        h = seq_apply(self.pool2, h).flatten(2)
        if isinstance(self.dropout, nn.Dropout):
            h = seq_apply(self.dropout, h)
        else:
            h = self.dropout(h)
        h = self.fc1_lif(seq_apply(self.fc1, h))
        out = seq_apply(self.fc2, h)
        out = out.reshape(T, out.shape[1], self.classes, self.group).mean(-1)
        self.last_logits = out
        return out.mean(0)

    def spike_convs(self) -> list[tuple[str, nn.Module, nn.Module | None]]:
        """The layers whose input is LIF spikes, i.e. LoAS spike layers, in forward order.

        ``(name, conv or linear, BN or None)``; names ``cell1.f01``, ``cell1.b20``, ``down``, ``cell2.*``,
        ``fc2``. fc1 is absent: its input is average-pooled spikes, not spikes.
        """
        out = []
        for cname in ("cell1", "cell2"):
            cell = getattr(self, cname)
            for ename, op in cell.ops.items():
                if op.code in CONV_OPS:
                    out.append((f"{cname}.{ename}", op.conv, op.bn))
            if cname == "cell1":
                out.append(("down", self.down_conv, self.down_bn2))
        out.append(("fc2", self.fc2, None))
        return out


#: dataset name -> (input shape, classes, published channels, second_avgpooling).
DATASET_SHAPES = {
    "cifar10": ((3, 32, 32), 10, 256, 4),
    "cifar100": ((3, 32, 32), 100, 128, 2),
    "fashion-mnist": ((1, 28, 28), 10, 32, 2),
}


def build_snasnet(cnt_mat, dataset: str = "cifar10", *, channels: int | None = None, T: int = 5,
                  second_avgpooling: int | None = None, **options) -> SNASNet:
    """A :class:`SNASNet` shaped for ``dataset`` (:data:`DATASET_SHAPES`), defaults as published.

    ``options`` are :class:`SNASNet`'s keyword options (``fc1_bias``, ``init``, ``dropout``,
    ``bn_stats``); the defaults are the official network's.

    Raises
    ------
    UserError
        On an unknown dataset or invalid sizes (message names the option).
    CellMatrixError
        On an invalid matrix.
    """
    if dataset not in DATASET_SHAPES:
        raise UserError(f"--dataset: unknown dataset {dataset!r} ({', '.join(DATASET_SHAPES)})")
    shape, classes, c_def, pool_def = DATASET_SHAPES[dataset]
    matrix = cnt_mat if isinstance(cnt_mat, CellMatrix) else parse_cnt_mat(cnt_mat)
    try:
        return SNASNet(matrix, channels if channels is not None else c_def, shape, classes, T,
                       second_avgpooling if second_avgpooling is not None else pool_def, **options)
    except ValueError as exc:
        raise UserError(f"--channels/--T/--second-avgpooling/options: {exc}") from None


def snasnet_from_config(config: dict) -> SNASNet:
    """Rebuild a network from its :attr:`SNASNet.config` (as stored in a checkpoint).

    A config without the network options (written before they existed) gets :data:`LEGACY_OPTIONS`,
    the behaviour it was trained with.
    """
    c = dict(config)
    if "fc1_bias" not in c:
        c = {**LEGACY_OPTIONS, **c}
    return SNASNet(parse_cnt_mat(c.pop("matrix")), c.pop("channels"), tuple(c.pop("in_shape")), **c)


# Checkpoints of the official code and of spikingjelly's SNASNet -------------------------------------
def _reference_key_map(matrix: CellMatrix) -> dict[str, str]:
    """Reference (official / spikingjelly ``snas_net``) state-dict key -> ours, for the edges of
    ``matrix``. Reference cells hold their edges in ``cell_architecture`` (forward, in
    :data:`FORWARD_ORDER`) and ``cell_architecture_back`` (:data:`BACKWARD_ORDER`), each a
    ``Sequential(LIF, conv, BN)``."""
    out = {"stem.0.weight": "stem.0.weight", "downconv1.2.weight": "down_conv.weight",
           "classifier.1.weight": "fc1.weight", "classifier.1.bias": "fc1.bias",
           "classifier.3.weight": "fc2.weight", "classifier.3.bias": "fc2.bias"}
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    for ref, ours in (("stem.1", "stem.1"), ("downconv1.0", "down_bn"), ("downconv1.3", "down_bn2"),
                      ("last_act.0", "last_bn")):
        out.update({f"{ref}.{k}": f"{ours}.{k}" for k in bn})
    for cell in ("cell1", "cell2"):
        for lst, order in (("cell_architecture", FORWARD_ORDER), ("cell_architecture_back", BACKWARD_ORDER)):
            for i, (s, d) in enumerate(order):
                if matrix.op(s, d) in CONV_OPS:
                    e = f"{cell}.ops.{SNASCell.edge_name(s, d)}"
                    out[f"{cell}.{lst}.{i}.1.weight"] = f"{e}.conv.weight"
                    out.update({f"{cell}.{lst}.{i}.2.{k}": f"{e}.bn.{k}" for k in bn})
    return out


def from_reference_state_dict(state: dict, cnt_mat, dataset: str, *, T: int = 5, celltype: str = "backward",
                              where: str = "state dict") -> SNASNet:
    """A :class:`SNASNet` holding the weights of an official (``model_snn.SNASNet``) or spikingjelly
    (``spikingjelly.activation_based.model.snas_net.SNASNet``) state dict.

    Neither layout stores the cell, so ``cnt_mat`` must be the one the network was built with; with
    ``celltype="forward"`` its lower triangle is ignored (the reference forward cell has no backward
    edges). Widths, classifier size and the second pooling are read from the tensors. A
    ``{"state_dict": ...}`` wrapper and a DataParallel ``module.`` prefix are accepted.

    Raises
    ------
    UserError
        Naming ``where`` and the key when a tensor is missing, unexpected or of the wrong shape
        (e.g. a matrix that is not the network's).
    """
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    state = {(k[7:] if k.startswith("module.") else k): v for k, v in state.items()}
    matrix = cnt_mat if isinstance(cnt_mat, CellMatrix) else parse_cnt_mat(cnt_mat)
    if celltype == "forward":
        matrix = CellMatrix(tuple(tuple(v if j > i else 0 for j, v in enumerate(r)) for i, r in enumerate(matrix.rows)),
                            matrix.option)
    elif celltype != "backward":
        raise UserError(f"--celltype: must be forward or backward, got {celltype!r}")
    if dataset not in DATASET_SHAPES:
        raise UserError(f"--dataset: unknown dataset {dataset!r} ({', '.join(DATASET_SHAPES)})")
    shape, classes, _, _ = DATASET_SHAPES[dataset]
    for k in ("stem.0.weight", "classifier.1.weight", "classifier.3.weight"):
        if k not in state:
            raise UserError(f"{where}: field {k!r}: missing (not an official or spikingjelly SNASNet state dict)")
    C = int(state["stem.0.weight"].shape[0])
    hidden, fc1_in = (int(v) for v in state["classifier.1.weight"].shape)
    out_features = int(state["classifier.3.weight"].shape[0])
    if out_features % classes:
        raise UserError(f"{where}: field 'classifier.3.weight': {out_features} outputs do not group into "
                        f"{classes} {dataset} classes")
    side = int(round((fc1_in / (2 * C)) ** 0.5))
    if side < 1 or 2 * C * side * side != fc1_in:
        raise UserError(f"{where}: field 'classifier.1.weight': {fc1_in} inputs do not fit 2 x {C} channels "
                        f"on a square map")
    pool = shape[1] // 2 // side
    net = SNASNet(matrix, C, shape, classes, T, pool, out_features // classes, hidden,
                  fc1_bias="classifier.1.bias" in state)
    keymap = _reference_key_map(matrix)
    ours = net.state_dict()
    mapped = {}
    for k, v in state.items():
        if k not in keymap:
            raise UserError(f"{where}: field {k!r}: unexpected for cell {matrix} (a conv edge the matrix lacks?)")
        if tuple(v.shape) != tuple(ours[keymap[k]].shape):
            raise UserError(f"{where}: field {k!r}: shape {tuple(v.shape)}, cell {matrix} needs "
                            f"{tuple(ours[keymap[k]].shape)}")
        mapped[keymap[k]] = v
    missing = [k for k, o in keymap.items() if o in ours and o not in mapped]
    if missing:
        raise UserError(f"{where}: field {missing[0]!r}: missing for cell {matrix} (a conv edge the network lacks?)")
    net.load_state_dict(mapped)
    return net


@torch.no_grad()
def calibrate_fc1(model: SNASNet, x: torch.Tensor, target: float = 1.0) -> float:
    """Warm-up before training: scale fc1's weights so that its output (the input current of the
    classifier's LIF) has standard deviation ``target`` (the threshold) on the batch ``x``.

    fc1 is the one LIF input without a BN in front of it; with the official N(0, 0.01) weights and a
    narrow network (few fc1 inputs) that LIF never fires, fc2 sees zeros and training stays at
    chance. The pass runs in train mode and leaves modes, BN running statistics and memories as they
    were. Returns the factor applied (1.0 when fc1's output is constant).
    """
    seen = []
    hook = model.fc1.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    modes = {m: m.training for m in model.modules()}
    buffers = {k: v.clone() for k, v in model.state_dict().items()
               if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    try:
        model.train()
        model.dropout.eval()
        model(x)
    finally:
        hook.remove()
        for m, t in modes.items():
            m.training = t
        model.load_state_dict(buffers, strict=False)
        functional.reset_net(model)
    std = float(torch.cat(seen).std())
    if not std > 0:
        return 1.0
    factor = target / std
    model.fc1.weight.mul_(factor)
    return factor
