"""Host side of the core, shared by every testbench (Amaranth simulator, cocotb) and `loas rtl sim`:
memory images from a layer, and reassembly + checking of the output beats against the golden model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.fibers import spike_fibers, weight_fibers
from sim.golden import LIFParams, run_layer
from sim.params import Capacity, CoreParams

from hw.core import MemSel


def load_image(words, weights, bias, params: CoreParams, *, all_chunks: bool = False) -> list[tuple[int, int, int]]:
    """(sel, addr, data) words (``sel`` a :class:`~hw.core.MemSel` value) that load a layer into the
    core's memories through its ``load`` port. Memories start at zero, so all-zero mask chunks are
    left out unless ``all_chunks`` (a layer loaded over an earlier one, and what a DRAM port would
    fetch: the whole bitmask)."""
    fa = spike_fibers(np.asarray(words, dtype=np.uint16), params.chunk_bits)
    fb = weight_fibers(np.asarray(weights, dtype=np.int8), params.chunk_bits)
    out = []
    for sel, f in ((MemSel.A_MASK, fa), (MemSel.B_MASK, fb)):
        C = f.n_chunks
        for r in range(f.rows):
            for c, v in enumerate(f.chunk_ints(r)):
                if v or all_chunks:
                    out.append((sel.value, r * C + c, v))
    wmask = (1 << params.weight_bits) - 1
    out += [(MemSel.A_VAL.value, i, int(v)) for i, v in enumerate(fa.values)]
    out += [(MemSel.B_VAL.value, i, int(v) & wmask) for i, v in enumerate(fb.values)]
    out += [(MemSel.A_PTR.value, i, int(v)) for i, v in enumerate(fa.ptr)]
    out += [(MemSel.B_PTR.value, i, int(v)) for i, v in enumerate(fb.ptr)]
    out += [(MemSel.BIAS.value, i, int(v) & 0xFFFF_FFFF) for i, v in enumerate(np.asarray(bias, dtype=np.int64))]
    return out


def pack(layout, **fields) -> int:
    """An integer holding ``fields`` at the offsets of a ``data.StructLayout`` (a port's bits)."""
    v = 0
    for name, value in fields.items():
        f = layout[name]
        v |= (int(value) & ((1 << f.width) - 1)) << f.offset
    return v


def unpack(layout, value: int) -> dict:
    """The fields of a ``data.StructLayout`` from an integer (inverse of :func:`pack`)."""
    return {name: (int(value) >> f.offset) & ((1 << f.width) - 1) for name, f in layout}


FIELDS = ("row", "n", "word", "nz", "index")


class Collector:
    """Reassembles the lanes' output beats into output words and per-row output fibers."""

    def __init__(self, M: int, N: int, P: int):
        self.M, self.N, self.P = M, N, P
        self.words = np.zeros((M, N), dtype=np.uint16)
        self.seen = np.zeros((M, N), dtype=bool)
        self.mask = np.zeros((M, N), dtype=bool)
        self.packed: list[dict[int, int]] = [dict() for _ in range(M)]
        self.errors: list[str] = []

    def beat(self, lane: int, row: int, n: int, word: int, nz: int, index: int):
        """One output beat of lane ``lane`` (a transfer on its ``out`` stream)."""
        r = row
        if r >= self.M or n >= self.N:
            self.errors.append(f"lane {lane} emitted ({r}, {n}) outside the {self.M} x {self.N} layer")
            return
        if self.seen[r, n]:
            self.errors.append(f"output ({r}, {n}) emitted twice")
        self.seen[r, n] = True
        self.words[r, n] = word
        self.mask[r, n] = bool(nz)
        if nz:
            self.packed[r][index] = word


    def add(self, lanes, rows, ns, words, nzs, indices):
        """Many beats at once (arrays in arrival order), as :meth:`beat` one by one."""
        rows, ns = np.asarray(rows, np.int64), np.asarray(ns, np.int64)
        inside = (rows < self.M) & (ns < self.N)
        for lane, r, n in zip(np.asarray(lanes)[~inside][:10], rows[~inside][:10], ns[~inside][:10]):
            self.errors.append(f"lane {int(lane)} emitted ({int(r)}, {int(n)}) outside the {self.M} x {self.N} layer")
        rows, ns = rows[inside], ns[inside]
        words, nzs, indices = (np.asarray(a, np.int64)[inside] for a in (words, nzs, indices))
        flat = rows * self.N + ns
        uniq, counts = np.unique(flat, return_counts=True)
        twice = uniq[(counts > 1) | self.seen.ravel()[uniq]]
        for f in twice[:10]:
            self.errors.append(f"output ({int(f) // self.N}, {int(f) % self.N}) emitted twice")
        self.seen.ravel()[flat] = True
        self.words.ravel()[flat] = words
        self.mask.ravel()[flat] = nzs.astype(bool)
        for r, i, w in zip(rows[nzs != 0].tolist(), indices[nzs != 0].tolist(), words[nzs != 0].tolist()):
            self.packed[r][i] = w


@dataclass
class Check:
    match: bool
    outputs_checked: int
    mismatches: list[str]


def check(col: Collector, words, weights, bias, lif: LIFParams, T: int, n_mask: int,
          max_report: int = 10) -> Check:
    """Compare every output word and every output fiber (bitmask, packed values) with the golden model."""
    gold = run_layer(words, weights, bias, lif, T, n_mask=n_mask)
    bad = list(col.errors)
    missing = np.argwhere(~col.seen)
    for r, n in missing[:max_report]:
        bad.append(f"output ({r}, {n}) never emitted")
    diff = np.argwhere(col.words != gold.out_words)
    for r, n in diff[:max_report]:
        bad.append(f"word ({r}, {n}): rtl {int(col.words[r, n]):#x} golden {int(gold.out_words[r, n]):#x}")
    fib = gold.out_fiber
    for r in range(col.M):
        gmask = fib.mask[r, : col.N]
        gvals = fib.fiber_values(r)
        rvals = [col.packed[r][i] for i in sorted(col.packed[r])]
        if not np.array_equal(gmask, col.mask[r]) or sorted(col.packed[r]) != list(range(len(rvals))) \
                or [int(v) for v in gvals] != rvals:
            bad.append(f"output fiber of row {r} differs (bitmask or packed words)")
            if len(bad) > 3 * max_report:
                break
    return Check(match=not bad, outputs_checked=int(col.M * col.N), mismatches=bad[:max_report])
