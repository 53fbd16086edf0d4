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
from spikingjelly.activation_based import functional

from sim.errors import UserError

from .layers import check_T, make_lif, seq_apply

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
    """Parse ``"0302 0030 3003 0000"`` or ``["0302", "0030", "3003", "0000"]`` into a :class:`CellMatrix`.

    Raises
    ------
    CellMatrixError
        Naming ``option``, the offending row or digit and what is expected.
    """
    rows = value.split() if isinstance(value, str) else [str(r) for r in value]
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


def random_cell(rng: np.random.Generator, max_tries: int = 10000) -> CellMatrix:
    """A random valid cell: each node pair gets a forward or a backward edge (p = 1/2) with a uniform
    operation code 0..4; invalid draws are redrawn.

    Raises
    ------
    RuntimeError
        If no valid cell was drawn in ``max_tries`` attempts (cannot happen with a sane generator).
    """
    for _ in range(max_tries):
        rows = [[0] * 4 for _ in range(4)]
        for s, d in FORWARD_ORDER:
            op = int(rng.integers(0, 5))
            if rng.random() < 0.5:
                rows[s][d] = op
            else:
                rows[d][s] = op
        try:
            return CellMatrix(tuple(tuple(r) for r in rows))
        except CellMatrixError:
            continue
    raise RuntimeError(f"no valid cell in {max_tries} random draws")


class EdgeOp(nn.Module):
    """One edge operation of a cell, applied to a single timestep ``[B, C, H, W]``.

    Parameters
    ----------
    code : int
        1 identity, 2 LIF -> conv1x1 -> BN, 3 LIF -> conv3x3 (pad 1) -> BN, 4 avgpool 3x3 (stride 1,
        pad 1). The LIF is single-step and keeps its membrane between timesteps (reset per sample by
        :func:`spikingjelly.activation_based.functional.reset_net`).
    channels : int

    Raises
    ------
    ValueError
        For code 0 (no edge) or an unknown code.
    """

    def __init__(self, code: int, channels: int):
        super().__init__()
        if code not in (1, 2, 3, 4):
            raise ValueError(f"edge operation code must be 1..4, got {code!r}")
        self.code = code
        if code in CONV_OPS:
            k = 1 if code == 2 else 3
            self.lif = make_lif()
            self.lif.step_mode = "s"
            self.conv = nn.Conv2d(channels, channels, k, 1, k // 2, bias=False)
            self.bn = nn.BatchNorm2d(channels)
        elif code == 4:
            self.pool = nn.AvgPool2d(3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.code == 1:
            return x
        if self.code == 4:
            return self.pool(x)
        return self.bn(self.conv(self.lif(x)))


class SNASCell(nn.Module):
    """A SNASNet cell on ``[T, B, C, H, W]`` (channels in = channels out).

    Edge modules are named ``f01`` (forward 0->1), ``b20`` (backward 2->0), ... in ``self.ops``.

    Parameters
    ----------
    matrix : CellMatrix
    channels : int
    """

    def __init__(self, matrix: CellMatrix, channels: int):
        super().__init__()
        self.matrix = matrix
        self.ops = nn.ModuleDict()
        for s, d, code in matrix.forward_edges():
            self.ops[f"f{s}{d}"] = EdgeOp(code, channels)
        for s, d, code in matrix.backward_edges():
            self.ops[f"b{s}{d}"] = EdgeOp(code, channels)

    @staticmethod
    def edge_name(src: int, dst: int) -> str:
        return f"{'f' if src < dst else 'b'}{src}{dst}"

    def _edge(self, src, dst, v):
        name = self.edge_name(src, dst)
        return self.ops[name](v) if name in self.ops else None

    def step(self, x0: torch.Tensor, b: list) -> tuple[torch.Tensor, list]:
        """One timestep: ``x0`` the cell input, ``b`` the backward inputs [b0, b1, b2].

        A node without incoming edges holds zeros (its ops still run: a LIF decays, a BN adds its
        shift), as in the published model. Returns the cell output x3 and the next ``b``.
        """
        zero = torch.zeros_like(x0)
        v = [x0 + b[0]]
        for dst in (1, 2, 3):
            x = zero
            for src in range(dst):
                y = self._edge(src, dst, v[src])
                if y is not None:
                    x = x + y
            v.append(x + b[dst] if dst < 3 else x)
        nb = []
        for dst in range(3):
            acc = zero
            for src in range(dst + 1, 4):
                y = self._edge(src, dst, v[src])
                if y is not None:
                    acc = acc + y
            nb.append(acc)
        return v[3], nb

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        zero = torch.zeros_like(x[0])
        b = [zero, zero, zero]
        out = []
        for t in range(x.shape[0]):
            y, b = self.step(x[t], b)
            out.append(y)
        return torch.stack(out)


def default_group(classes: int) -> int:
    """Outputs per class of the classifier: 10 (CIFAR-10: 100 -> 10), 5 above 10 classes (500 -> 100)."""
    return 10 if classes <= 10 else 5


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

    Raises
    ------
    ValueError
        On a non-positive size, a bad T, or an image too small for the two poolings.
    CellMatrixError
        On an invalid matrix string.

    Attributes
    ----------
    last_logits : torch.Tensor
        Per-timestep logits ``[T, B, classes]`` of the last forward call.
    """

    def __init__(self, matrix, channels: int = 128, in_shape=(3, 32, 32), classes: int = 10, T: int = 5,
                 second_avgpooling: int = 2, group: int | None = None, hidden: int = 1024):
        super().__init__()
        if isinstance(matrix, str):
            matrix = parse_cnt_mat(matrix)
        for name, v in (("channels", channels), ("classes", classes), ("second_avgpooling", second_avgpooling),
                        ("hidden", hidden)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
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
        self.config = dict(matrix=str(matrix), channels=C, in_shape=list(self.in_shape), classes=classes, T=T,
                           second_avgpooling=second_avgpooling, group=self.group, hidden=hidden)
        self.stem = nn.Sequential(nn.Conv2d(c_in, C, 3, 1, 1, bias=False), nn.BatchNorm2d(C))
        self.cell1 = SNASCell(matrix, C)
        self.down_bn = nn.BatchNorm2d(C)
        self.down_lif = make_lif()
        self.down_conv = nn.Conv2d(C, 2 * C, 3, 1, 1, bias=False)
        self.down_bn2 = nn.BatchNorm2d(2 * C)
        self.pool1 = nn.AvgPool2d(2, 2)
        self.cell2 = SNASCell(matrix, 2 * C)
        self.last_bn = nn.BatchNorm2d(2 * C)
        self.last_lif = make_lif()
        self.pool2 = nn.AvgPool2d(second_avgpooling, second_avgpooling)
        self.dropout = nn.Dropout(0.5)
        self.fc1 = nn.Linear(2 * C * hp * wp, hidden)
        self.fc1_lif = make_lif()
        self.fc2 = nn.Linear(hidden, classes * self.group)
        self.last_logits: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        functional.reset_net(self)
        T = self.T
        cur = self.stem(x)
        h = cur.unsqueeze(0).expand(T, *cur.shape)
        h = self.cell1(h)
        h = self.down_lif(seq_apply(self.down_bn, h))
        h = seq_apply(lambda z: self.pool1(self.down_bn2(self.down_conv(z))), h)
        h = self.cell2(h)
        h = self.last_lif(seq_apply(self.last_bn, h))
        h = seq_apply(self.pool2, h).flatten(2)
        h = self.fc1_lif(seq_apply(lambda z: self.fc1(self.dropout(z)), h))
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
                  second_avgpooling: int | None = None) -> SNASNet:
    """A :class:`SNASNet` shaped for ``dataset`` (:data:`DATASET_SHAPES`), defaults as published.

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
                       second_avgpooling if second_avgpooling is not None else pool_def)
    except ValueError as exc:
        raise UserError(f"--channels/--T/--second-avgpooling: {exc}") from None


def snasnet_from_config(config: dict) -> SNASNet:
    """Rebuild a network from its :attr:`SNASNet.config` (as stored in a checkpoint)."""
    c = dict(config)
    return SNASNet(parse_cnt_mat(c.pop("matrix")), c.pop("channels"), tuple(c.pop("in_shape")), **c)
