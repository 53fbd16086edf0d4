"""Host side of the core, shared by every testbench (Amaranth simulator, cocotb) and `loas rtl sim`:
memory images from a layer, and reassembly + checking of the output beats against the golden model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.fibers import spike_fibers, weight_fibers
from sim.golden import LIFParams, run_layer
from sim.memory import check_fit
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


# The accelerator (hw/accel.py): descriptor, DRAM image, output fibers read back ------------------
@dataclass
class DramImage:
    """A layer laid out in DRAM for :class:`hw.accel.Accelerator`: ``mem`` (bytes), ``desc``
    (descriptor register values by name), ``regions`` (name -> (base, bytes)), ``tiling``."""

    mem: bytearray
    desc: dict
    regions: dict
    tiling: object


def _put(mem: bytearray, base: int, values, eb: int):
    """Elements of ``eb`` bits (little-endian, element i at bit i*eb) at byte ``base``."""
    vals = [int(v) & ((1 << eb) - 1) for v in values]
    if eb >= 8:
        nb = eb // 8
        mem[base:base + nb * len(vals)] = b"".join(v.to_bytes(nb, "little") for v in vals)
    else:
        per = 8 // eb
        for i in range(0, len(vals), per):
            byte = 0
            for k, v in enumerate(vals[i:i + per]):
                byte |= v << (k * eb)
            mem[base + i // per] = byte


def check_descriptor(desc: dict, chip) -> None:
    """Refuse a descriptor this build cannot run: ValueError with one line naming the field, its
    value and the limit (every field of :data:`sim.memory.DESC_FIELDS`, 32-bit unsigned)."""
    from sim.memory import DESC_FIELDS

    missing = [f for f in DESC_FIELDS if f not in desc]
    if missing:
        raise ValueError(f"descriptor: missing field {missing[0]}")
    for f in DESC_FIELDS:
        v = desc[f]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v < 1 << 32:
            raise ValueError(f"descriptor field {f} = {v!r} is not a 32-bit unsigned integer")
    limits = {"m": chip.max_m, "n": chip.max_n, "chunks": chip.core.chunks(chip.max_k),
              "tile_rows": chip.tile_rows, "tile_cols": chip.tile_cols, "decay_shift": 31, "n_mask": 1, "nmtk": 1}
    for f, lim in limits.items():
        if desc[f] > lim:
            raise ValueError(f"descriptor field {f} = {desc[f]} exceeds this build's limit {lim}")
    for f in ("m", "n", "chunks", "tile_rows", "tile_cols"):
        if desc[f] < 1:
            raise ValueError(f"descriptor field {f} = {desc[f]} must be >= 1")
    if desc["n_tiles"] != -(-desc["n"] // desc["tile_cols"]):
        raise ValueError(f"descriptor field n_tiles = {desc['n_tiles']} must be ceil(n / tile_cols) = "
                         f"{-(-desc['n'] // desc['tile_cols'])}")
    lb = chip.mem.line_bytes
    for f in DESC_FIELDS[DESC_FIELDS.index("a_mask"):]:
        if desc[f] % lb or desc[f] >= 1 << chip.mem.addr_bits:
            raise ValueError(f"descriptor field {f} = {desc[f]:#x} must be a {lb}-byte aligned address below "
                             f"2^{chip.mem.addr_bits}")


def dram_image(words, weights, bias, lif: LIFParams, n_mask: int, chip, *, name: str = "layer",
               loop_order: str = "mntk") -> DramImage:
    """The layer in DRAM in the trace's fiber format (A: bitmask chunks, packed T-bit words, row
    pointers; B: bitmask chunks, weights, column pointers; bias; output slots) and the descriptor
    that runs it with its tiles in ``loop_order`` (:data:`sim.memory.LOOP_ORDERS`). Refuses a layer
    that does not fit (:func:`sim.memory.check_fit`)."""
    from sim.memory import DESC_FIELDS, FETCH_REGIONS, elem_bits, region_sizes, tiling

    words = np.asarray(words, dtype=np.uint16)
    weights = np.asarray(weights, dtype=np.int8)
    bias = np.asarray(bias, dtype=np.int64)
    M, K = words.shape
    N = weights.shape[1]
    W = chip.core.chunk_bits
    fa, fb = spike_fibers(words, W), weight_fibers(weights, W)
    til = tiling(M, K, N, chip, loop_order)
    check_fit(name, M, K, N, fa.ptr, fb.ptr, chip, bias_abs=int(np.abs(bias).max(initial=0)))
    if lif.decay_shift > 31 or not -(1 << 31) <= lif.threshold < (1 << 31):
        raise ValueError(f"layer {name}: LIF threshold {lif.threshold} / decay_shift {lif.decay_shift} out of range")
    sizes = region_sizes(M, N, til.C, fa.nnz, fb.nnz, chip, til)
    lb = chip.mem.line_bytes
    regions, at = {}, 0
    for r, n in sizes.items():
        regions[r] = (at, n)
        at += -(-max(1, n) // lb) * lb
    if at >= 1 << chip.mem.addr_bits:
        raise ValueError(f"layer {name}: the DRAM image ({at} bytes) exceeds the {chip.mem.addr_bits}-bit address space")
    mem = bytearray(at)
    content = {"a_mask": [v for r in range(M) for v in fa.chunk_ints(r)], "a_val": fa.values, "a_ptr": fa.ptr,
               "b_mask": [v for r in range(N) for v in fb.chunk_ints(r)], "b_val": fb.values, "b_ptr": fb.ptr,
               "bias": bias}
    for r in FETCH_REGIONS:
        _put(mem, regions[r][0], content[r], elem_bits(r, chip))
    desc = {"m": M, "n": N, "chunks": til.C, "tile_rows": til.tile_rows, "tile_cols": til.tile_cols,
            "n_tiles": til.n_tiles, "threshold": lif.threshold & 0xFFFF_FFFF, "decay_shift": lif.decay_shift,
            "n_mask": n_mask, "nmtk": int(loop_order == "nmtk"), **{r: regions[r][0] for r in regions}}
    assert set(desc) == set(DESC_FIELDS)
    check_descriptor(desc, chip)
    return DramImage(mem=mem, desc=desc, regions=regions, tiling=til)


def read_outputs(img: DramImage, chip) -> Collector:
    """The output fibers the accelerator wrote into ``img.mem``, as a :class:`Collector` (words,
    bitmask, packed words per row) for :func:`check`."""
    from sim.memory import slot_lines

    til = img.tiling
    M, N, T = til.M, til.N, chip.core.timesteps
    Vb, lb = chip.value_bits, chip.mem.line_bytes
    ml, vl = slot_lines(til.tile_cols, chip)
    col = Collector(M, N, chip.core.pes)
    mem = img.mem
    ob, vb, cb = img.regions["o_mask"][0], img.regions["o_val"][0], img.regions["o_cnt"][0]
    for m in range(M):
        row_index = 0
        for j in range(til.n_tiles):
            n0, Nt = til.cols(j)
            s = m * til.n_tiles + j
            cnt = int.from_bytes(mem[cb + 4 * s: cb + 4 * s + 4], "little")
            mbits = int.from_bytes(mem[ob + s * ml * lb: ob + (s + 1) * ml * lb], "little")
            vbits = int.from_bytes(mem[vb + s * vl * lb: vb + (s + 1) * vl * lb], "little")
            nz = [(mbits >> n) & 1 for n in range(Nt)]
            if sum(nz) != cnt:
                col.errors.append(f"row {m} tile {j}: count {cnt} but {sum(nz)} mask bits set")
            k = 0
            for n in range(Nt):
                word = 0
                if nz[n]:
                    word = (vbits >> (k * Vb)) & ((1 << T) - 1)
                    k += 1
                col.beat(-1, m, n0 + n, word, nz[n], row_index)
                row_index += nz[n]
    return col
