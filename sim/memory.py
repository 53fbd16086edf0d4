"""Memory side of the cycle-level models: operand sizes, the FiberCache-like buffer, DRAM.

Traffic is counted in bytes per *operand* so that every design reports the same categories:

* ``spikes``   packed spike values (LoAS: T bits per non-silent word) or spike coordinates (Gamma-S)
* ``weights``  non-zero weight values (dense weights for PTB / Stellar), plus their coordinates
* ``bitmasks`` every bitmask bit (input, weight and output fibers)
* ``outputs``  packed output values (LoAS) or output spike coordinates
* ``psums``    partial sums and membrane potentials that cross timesteps or are merged through memory

Two memory models live here:

* LoAS: the accelerator's memory system as built (hw/accel.py, hw/README.md "Accelerator"): DRAM
  image, fetch jobs, the DRAM port's timing, the output writer, per-region counters
  (:func:`accel_timing`, cycle-exact against the RTL with the deterministic DRAM model), and the
  refusal of a layer that does not fit a build (:func:`check_layer`, :func:`check_fit`).
* The analytical baselines (sim/baselines.py), an assumption of ours written down here once: the
  global buffer behaves like Gamma's FiberCache, i.e. the accelerator knows its future accesses
  (fibers are fetched explicitly, replacement is by next use). For an operand of ``size`` bytes that
  is swept ``passes`` times in the same order while ``avail`` bytes of buffer are free for it, the
  first pass misses completely and each later pass misses on ``max(0, size - avail)`` bytes (an
  optimal policy keeps ``avail`` bytes of the cyclic stream resident; LRU would keep none). Banks
  bound the buffer bandwidth: ``banks * line_bytes`` bytes per cycle. DRAM transfers overlap compute
  (double buffering), so a layer takes ``max(compute, DRAM, buffer)`` cycles plus the fill of its
  first tile; the DRAM bandwidth is LoAS's port's (:func:`dram_bytes_per_cycle`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

OPERANDS = ("spikes", "weights", "bitmasks", "outputs", "psums")


def nbytes(bits) -> int:
    """Bits -> whole bytes (rounded up)."""
    return int(-(-int(bits) // 8))


@dataclass
class Traffic:
    """Bytes moved per operand, for the global buffer (SRAM) and DRAM."""

    sram: dict = field(default_factory=lambda: dict.fromkeys(OPERANDS, 0))
    dram: dict = field(default_factory=lambda: dict.fromkeys(OPERANDS, 0))

    def add(self, level: str, operand: str, n) -> None:
        if operand not in OPERANDS:
            raise KeyError(f"unknown operand {operand!r}")
        d = self.sram if level == "sram" else self.dram
        d[operand] += int(round(float(n)))

    @property
    def sram_total(self) -> int:
        return int(sum(self.sram.values()))

    @property
    def dram_total(self) -> int:
        return int(sum(self.dram.values()))


def refetch_bytes(size: float, passes: int, avail: float) -> float:
    """DRAM bytes for `passes` sweeps over an operand of `size` bytes with `avail` bytes of buffer
    (see the module docstring): ``size + (passes - 1) * max(0, size - avail)``."""
    if passes <= 0 or size <= 0:
        return 0.0
    return size + (passes - 1) * max(0.0, size - max(0.0, avail))


def spill_bytes(size: float, accesses: float, avail: float) -> float:
    """Bytes of `accesses` over a `size`-byte array that go to DRAM when only `avail` bytes fit."""
    if size <= 0:
        return 0.0
    return accesses * max(0.0, 1.0 - max(0.0, avail) / size)


@dataclass(frozen=True)
class MemoryTiming:
    """Cycles the memory system needs for a layer's traffic, and the buffer's hits and misses."""

    dram_cycles: int
    sram_cycles: int
    fill_cycles: int
    buffer_accesses: int  # lines read or written by the PEs and the DRAM fills
    buffer_hits: int
    buffer_misses: int  # lines filled from DRAM


def memory_timing(traffic: Traffic, cfg, *, first_tile_bytes: float = 0.0) -> MemoryTiming:
    """Bandwidth-bound cycles of DRAM and buffer traffic for a :class:`~sim.config.LoASConfig`."""
    dram_bpc = dram_bytes_per_cycle(cfg)
    sram_bpc = cfg.buffer.banks * cfg.buffer.line_bytes
    line = cfg.buffer.line_bytes
    dram_cycles = int(np.ceil(traffic.dram_total / dram_bpc))
    sram_cycles = int(np.ceil(traffic.sram_total / sram_bpc))
    accesses = int(np.ceil(traffic.sram_total / line))
    dram_read = sum(v for k, v in traffic.dram.items() if k != "outputs")
    misses = min(accesses, int(np.ceil(dram_read / line)))
    return MemoryTiming(
        dram_cycles=dram_cycles,
        sram_cycles=sram_cycles,
        fill_cycles=int(np.ceil(min(first_tile_bytes, traffic.dram_total) / dram_bpc)),
        buffer_accesses=accesses,
        buffer_hits=accesses - misses,
        buffer_misses=misses,
    )


def dram_bytes_per_cycle(cfg) -> float:
    """DRAM bytes per clock cycle of a :class:`~sim.config.LoASConfig`: its DRAM port's
    (``dram.data_bits / 8 / dram.beat_cycles``; 64 B/cycle = 51.2 GB/s at 800 MHz by default)."""
    return cfg.dram.bytes_per_cycle()


def capacity_bytes(cfg) -> int:
    return cfg.buffer.capacity_kb * 1024


# The accelerator's memory system (hw/README.md "Accelerator"; hw/accel.py is its RTL) ------------
#: Descriptor registers, in register-index order (all 32 bits): layer shape, tiling, LIF settings,
#: the loop order (``nmtk``: 0 = mntk, 1 = nmtk), region base addresses (bytes, line-aligned).
DESC_FIELDS = ("m", "n", "chunks", "tile_rows", "tile_cols", "n_tiles", "threshold", "decay_shift", "n_mask", "nmtk",
               "a_mask", "a_val", "a_ptr", "b_mask", "b_val", "b_ptr", "bias", "o_mask", "o_val", "o_cnt")
#: Regions the fetch unit reads (the trace's fiber format) and the writer writes.
FETCH_REGIONS = ("a_mask", "a_val", "a_ptr", "b_mask", "b_val", "b_ptr", "bias")
WRITE_REGIONS = ("o_mask", "o_val", "o_cnt")
#: Regions whose buffer (tile memory) element reads by the lanes the accelerator counts: per job
#: one pointer of each side and one bias (the job former), per match one weight (F side) and one
#: spike word (L side). The mask chunks' window reads are not counted.
READ_REGIONS = ("a_val", "a_ptr", "b_val", "b_ptr", "bias")
#: Operand of each region (sim.memory.OPERANDS categories).
REGION_OPERAND = {"a_mask": "bitmasks", "b_mask": "bitmasks", "o_mask": "bitmasks", "a_val": "spikes",
                  "b_val": "weights", "a_ptr": "bitmasks", "b_ptr": "bitmasks", "bias": "weights",
                  "o_val": "outputs", "o_cnt": "outputs"}


def elem_bits(region: str, chip) -> int:
    """Bits of one element of a fetched region in DRAM (and in the buffer)."""
    if region in ("a_mask", "b_mask"):
        return chip.core.chunk_bits
    if region == "a_val":
        return chip.value_bits
    if region == "b_val":
        return chip.weight_store_bits
    return 32


def _pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def slot_lines(cols: int, chip) -> tuple[int, int]:
    """DRAM lines of one output slot (one row of one B tile of ``cols`` columns): mask lines and
    packed-word lines, each rounded up to a power of two (a burst never crosses a slot)."""
    D = chip.mem.data_bits
    return _pow2(-(-cols // D)), _pow2(-(-cols * chip.value_bits // D))


#: Tile loop orders the accelerator runs (the descriptor's ``nmtk`` bit): ``mntk`` (LoAS's: a row
#: group's A tile resident while every B tile streams past) and ``nmtk`` (a B tile resident while
#: every row group's A tile streams past).
LOOP_ORDERS = ("mntk", "nmtk")


@dataclass(frozen=True)
class Tiling:
    """How a layer runs on a chip: A tiles of ``tile_rows`` rows (``groups`` of them), B tiles of
    ``tile_cols`` columns (``n_tiles``), tiles (g, j) in ``order`` (:data:`LOOP_ORDERS`). mntk: A
    fetched once per row group, B once per tile (once in all when one tile holds every column);
    nmtk: B fetched once per column tile, A once per tile (once in all when one tile holds every
    row)."""

    M: int
    N: int
    C: int
    tile_rows: int
    tile_cols: int
    order: str = "mntk"

    def __post_init__(self):
        if self.order not in LOOP_ORDERS:
            raise ValueError(f"loop_order: must be one of {', '.join(LOOP_ORDERS)}, got {self.order!r}")

    @property
    def groups(self) -> int:
        return -(-self.M // self.tile_rows)

    @property
    def n_tiles(self) -> int:
        return -(-self.N // self.tile_cols)

    def rows(self, g: int) -> tuple[int, int]:
        m0 = g * self.tile_rows
        return m0, min(self.tile_rows, self.M - m0)

    def cols(self, j: int) -> tuple[int, int]:
        n0 = j * self.tile_cols
        return n0, min(self.tile_cols, self.N - n0)

    def tiles(self) -> list[tuple[int, int]]:
        """The tiles (g, j) in run order."""
        if self.order == "mntk":
            return [(g, j) for g in range(self.groups) for j in range(self.n_tiles)]
        return [(g, j) for j in range(self.n_tiles) for g in range(self.groups)]


def tiling(M: int, K: int, N: int, chip, loop_order: str = "mntk") -> Tiling:
    return Tiling(M=M, N=N, C=chip.core.chunks(K), tile_rows=min(M, chip.tile_rows), tile_cols=min(N, chip.tile_cols),
                  order=loop_order)


def region_sizes(M: int, N: int, C: int, a_nnz: int, b_nnz: int, chip, til: Tiling) -> dict:
    """Bytes of every region of the DRAM image (before line alignment)."""
    ml, vl = slot_lines(til.tile_cols, chip)
    lb = chip.mem.line_bytes
    slots = M * til.n_tiles
    e = {r: elem_bits(r, chip) for r in FETCH_REGIONS}
    return {"a_mask": nbytes(M * C * e["a_mask"]), "a_val": nbytes(a_nnz * e["a_val"]),
            "a_ptr": nbytes((M + 1) * 32), "b_mask": nbytes(N * C * e["b_mask"]),
            "b_val": nbytes(b_nnz * e["b_val"]), "b_ptr": nbytes((N + 1) * 32), "bias": nbytes(N * 32),
            "o_mask": slots * ml * lb, "o_val": slots * vl * lb, "o_cnt": slots * 4}


def fetch_jobs(a_ptr: np.ndarray, b_ptr: np.ndarray, til: Tiling):
    """The fetch unit's jobs in order, per tile: a list of (tile, jobs) where jobs are (region,
    first element, count) (a value job of count 0 the tile controller skips), then the core runs
    tile (g, j) and the writer writes it; the tiles in ``til.order``, A's jobs before B's. The
    resident operand (mntk: A, nmtk: B) is fetched with the first tile that uses it, the streamed
    one for every tile unless one tile holds all of it (then with the first tile only)."""
    C = til.C
    mntk = til.order == "mntk"
    out = []
    for k, (g, j) in enumerate(til.tiles()):
        m0, R = til.rows(g)
        n0, Nt = til.cols(j)
        jobs = []
        if (j == 0) if mntk else (til.groups > 1 or k == 0):
            jobs += [("a_ptr", m0, R + 1), ("a_mask", m0 * C, R * C),
                     ("a_val", int(a_ptr[m0]), int(a_ptr[m0 + R] - a_ptr[m0]))]
        if (til.n_tiles > 1 or k == 0) if mntk else (g == 0):
            jobs += [("b_ptr", n0, Nt + 1), ("b_mask", n0 * C, Nt * C),
                     ("b_val", int(b_ptr[n0]), int(b_ptr[n0 + Nt] - b_ptr[n0])), ("bias", n0, Nt)]
        out.append(((g, j), jobs))
    return out


@dataclass(frozen=True)
class AccelTiming:
    """Cycles and bytes of one layer on the accelerator (hw/accel.py) with the deterministic DRAM
    model: ``cycles`` (the RTL's ``cycles`` counter), ``compute`` (core cycles summed over tiles),
    ``fetch`` / ``write`` (cycles of the fetch phases; writer cycles per tile, start to idle, and
    the final wait for the B responses, which overlap the next tiles' fetches and runs),
    ``fetch_wait`` (fetch-unit cycles
    waiting for DRAM), DRAM ``bytes_read`` / ``bytes_written`` per region, ``words_loaded``
    (buffer writes by the fetch unit), ``tiles``; ``buffer_writes`` (the fetch unit's buffer writes
    per :data:`FETCH_REGIONS` region: elements, lines for the line-wide ``a_val`` / ``b_val``; they
    sum to ``words_loaded``) and ``buffer_reads`` (the lanes' element reads per
    :data:`READ_REGIONS` region); ``pe_busy`` (P,) and ``core_stalls`` (:class:`sim.tppe.CoreTiming`'s
    busy cycles per lane and stall causes, summed over tiles: the RTL's ``lane_busy``, and its
    ``walk_wait`` and ``imbalance`` counters are these stalls of the same names). Beyond the RTL's
    counters: the other core stalls, and ``idle``, the cycles the core is not running split by what
    it waits for: ``fetch`` (its tile's fetch, DRAM waits included), ``writer`` (its output stage
    bank: the writer still writing the tile two before; at the end, the last tile's write and its B
    responses) and ``control`` (the sequencers' 3 cycles per tile and the final one);
    ``compute + sum(idle.values()) == cycles``."""

    cycles: int
    compute: int
    fetch: int
    write: int
    fetch_wait: int
    bytes_read: dict
    bytes_written: dict
    words_loaded: int
    tiles: int
    buffer_writes: dict
    buffer_reads: dict
    pe_busy: np.ndarray = None
    core_stalls: dict = field(default_factory=dict)
    idle: dict = field(default_factory=dict)

    def counters(self) -> dict:
        """The values of the RTL's counters (hw/accel.py ``Accelerator``) this model predicts, by
        the counters' names (``write_wait`` has no model counterpart)."""
        return {"cycles": self.cycles, "compute": self.compute, "fetch_wait": self.fetch_wait,
                "words_loaded": self.words_loaded, "bytes_read": dict(self.bytes_read),
                "bytes_written": dict(self.bytes_written), "buffer_writes": dict(self.buffer_writes),
                "buffer_reads": dict(self.buffer_reads), "lane_busy": [int(b) for b in self.pe_busy],
                "walk_wait": int(self.core_stalls["walk_wait"]), "imbalance": int(self.core_stalls["imbalance"])}

    def traffic(self, chip=None) -> "Traffic":
        """DRAM bytes by operand; with ``chip`` also the buffer bytes by operand
        (:meth:`buffer_bytes`)."""
        tr = Traffic()
        for r, n in {**self.bytes_read, **self.bytes_written}.items():
            tr.add("dram", REGION_OPERAND[r], n)
        if chip is not None:
            for r, n in self.buffer_bytes(chip).items():
                tr.add("sram", REGION_OPERAND[r], n)
        return tr

    def buffer_bytes(self, chip) -> dict:
        """Buffer bytes per region, from the counters: the fetch unit's writes (an element of the
        region's width, a whole line for ``a_val`` / ``b_val``) plus the lanes' element reads."""
        out = {}
        for r in FETCH_REGIONS:
            w = self.buffer_writes.get(r, 0) * (chip.mem.data_bits if r in LINE_REGIONS else elem_bits(r, chip))
            out[r] = nbytes(w + self.buffer_reads.get(r, 0) * elem_bits(r, chip))
        return out


def check_layer(name: str, M: int, K: int, N: int, chip, *, a_tile_nnz: int = 0, b_tile_nnz: int = 0,
                bias_abs: int = 0, T: int = None):
    """Refuse a layer this build cannot run: :class:`~sim.errors.LayerFitError` (a ValueError) with
    one line naming the layer, the dimension and its limit."""
    from sim.errors import LayerFitError

    for dim, v in (("M", M), ("K", K), ("N", N)):
        if v < 1:
            raise LayerFitError(f"layer {name}: {dim} = {v} must be >= 1")
    limits = (("M", M, chip.max_m, "max_m"), ("N", N, chip.max_n, "max_n"), ("K", K, chip.max_k, "max_k"),
              ("spike words of an A tile", a_tile_nnz, chip.a_nnz, "a_nnz"),
              ("weights of a B tile", b_tile_nnz, chip.b_nnz, "b_nnz"))
    for dim, v, lim, field in limits:
        if v > lim:
            raise LayerFitError(f"layer {name}: {dim} = {v} exceeds this build's {field} = {lim}")
    if T is not None and T > chip.core.timesteps:
        raise LayerFitError(f"layer {name}: T = {T} exceeds this build's timesteps = {chip.core.timesteps}")
    if bias_abs >= 1 << (chip.bias_bits - 1):
        raise LayerFitError(f"layer {name}: |bias| = {bias_abs} does not fit this build's bias_bits = {chip.bias_bits}")


def tile_nnz(ptr, size: int, step: int) -> int:
    """Most values in one tile of ``step`` consecutive fibers (``ptr``: the size + 1 fiber pointers)."""
    ptr = np.asarray(ptr, dtype=np.int64)
    starts = np.arange(0, size, step)
    return int((ptr[np.minimum(starts + step, size)] - ptr[starts]).max(initial=0))


def fiber_ptr(counts) -> np.ndarray:
    """Fiber pointers (CSR: len(counts) + 1, starting at 0) of fibers holding ``counts`` values."""
    return np.concatenate(([0], np.cumsum(counts, dtype=np.int64)))


def check_operands_fit(name: str, words, weights, chip) -> None:
    """:func:`check_fit` of a layer given as its operands (spike words (M, K), weights (K, N))."""
    (M, K), N = np.shape(words), np.shape(weights)[1]
    check_fit(name, M, K, N, fiber_ptr(np.count_nonzero(words, axis=1)),
              fiber_ptr(np.count_nonzero(weights, axis=0)), chip)


def check_fit(name: str, M: int, K: int, N: int, a_ptr, b_ptr, chip, *, bias_abs: int = 0, T: int = None):
    """:func:`check_layer` with the values per A / B tile counted from the fibers' pointers."""
    check_layer(name, M, K, N, chip)
    til = tiling(M, K, N, chip)
    check_layer(name, M, K, N, chip, a_tile_nnz=tile_nnz(a_ptr, M, til.tile_rows),
                b_tile_nnz=tile_nnz(b_ptr, N, til.tile_cols), bias_abs=bias_abs, T=T)


#: Regions the fetch unit copies a whole line per cycle into the buffer (the others: one element).
LINE_REGIONS = ("a_val", "b_val")


def _job_time(t: int, base: int, eb: int, first: int, count: int, mp, lines_mode: bool = False):
    """One fetch job accepted in cycle t: (cycle of its last buffer write, lines read, cycles
    waiting for DRAM) -- the timing contract of hw.accel.Fetcher and hw.amsim.DramModel."""
    D, lb, L, G, B = mp.data_bits, mp.line_bytes, mp.latency, mp.beat_cycles, mp.burst_beats
    epl = D // eb
    l0 = base // lb + first // epl
    l1 = base // lb + (first + count - 1) // epl
    lines = np.arange(l0, l1 + 1)
    e = np.full(lines.size, epl, dtype=np.int64)
    e[0] = min(count, epl - first % epl)
    if lines.size > 1:
        e[-1] = count - e[0] - epl * (lines.size - 2)
    if lines_mode:
        e[:] = 1
    # a burst ends where the next line starts a burst_beats-aligned block
    starts = [0, *(np.flatnonzero(lines[1:] % B == 0) + 1).tolist(), lines.size]
    a = t + 1  # AR in the cycle after the job is accepted
    prev_end = None
    for b0, b1 in zip(starts[:-1], starts[1:]):
        eb_ = e[b0:b1]
        k = np.arange(b1 - b0)
        E = np.concatenate(([0], np.cumsum(eb_)[:-1]))
        avail = a + L + k * G
        if prev_end is not None:
            avail[0] = max(avail[0], prev_end)
        s = E + np.maximum.accumulate(avail - E)
        prev_end = int(s[-1] + eb_[-1])  # the cycle the burst's last element is written
        a = int(s[-1]) + 1
    last = prev_end
    busy = last - t  # cycles t+1 .. last
    return last, lines.size, busy - int(e.sum())


def accel_timing(words, weights, out_words, chip, loop_order: str = "mntk") -> AccelTiming:
    """Cycles and bytes of a layer on ``hw.accel.Accelerator(chip)`` with the deterministic DRAM
    model (hw/README.md "Accelerator"): fetch jobs one after another (:func:`fetch_jobs`), the core
    per tile (:func:`sim.tppe.core_cycles` of each tile, all computed by :func:`sim.tppe.tile_cycles`),
    the writer per tile from the double-buffered output stage (run k waits for the write of tile
    k - 2, the write of tile k for run k and the write of tile k - 1), the tiles in ``loop_order``
    (:data:`LOOP_ORDERS`). ``out_words`` (M, N): the layer's output words (their non-zeros size
    the packed output writes)."""
    from sim.fibers import spike_fibers, weight_fibers
    from sim.tppe import tile_cycles

    words = np.asarray(words)
    weights = np.asarray(weights)
    M, K = words.shape
    N = weights.shape[1]
    mp, p = chip.mem, chip.core
    D, lb, L = mp.data_bits, mp.line_bytes, mp.latency
    til = tiling(M, K, N, chip, loop_order)
    fa, fb = spike_fibers(words, p.chunk_bits), weight_fibers(weights, p.chunk_bits)
    sizes = region_sizes(M, N, til.C, fa.nnz, fb.nnz, chip, til)
    bases, at = {}, 0
    for r, n in sizes.items():
        bases[r] = at
        at += -(-max(1, n) // lb) * lb
    ml, vl = slot_lines(til.tile_cols, chip)
    nz = np.asarray(out_words) != 0
    rd = dict.fromkeys(FETCH_REGIONS, 0)
    wr = dict.fromkeys(WRITE_REGIONS, 0)
    compute = fetch = write = wait = loaded = 0
    core_totals, busy, stalls = tile_cycles(words, weights, p, til.tile_rows, til.tile_cols)
    idle = dict.fromkeys(("fetch", "writer", "control"), 0)
    bw = dict.fromkeys(FETCH_REGIONS, 0)
    plan = fetch_jobs(fa.ptr, fb.ptr, til)
    f_arrive = 0    # the fetch sequencer reaches tile k's F_TILE state
    run_start = []  # cycle each run starts (core_start)
    r_arrive = 0    # the run sequencer is back in R_WAIT
    free = [0, 0]   # first cycle the writer is idle (busy low) after tile k - 2, after tile k - 1
    b_back = 0      # the cycle after the last B response so far
    d = 0
    for k, ((g, j), jobs) in enumerate(plan):
        m0, R = til.rows(g)
        n0, Nt = til.cols(j)
        # Fetch sequencer: F_TILE waits until run k - 1 has started, then the A jobs (if any),
        # B_TILE, the B jobs (if any), F_DONE (the tile counts as fetched from the cycle after).
        p_k = f_arrive if k == 0 else max(f_arrive, run_start[k - 1] + 1)
        t = p_k + 1
        for side in ("a_", "b_"):
            if side == "b_":
                t += 1  # B_TILE (B fetched or resident)
            for region, first, count in jobs:
                if region.startswith("a_") != (side == "a_"):
                    continue
                if count == 0:  # an empty value job: its state is passed in one cycle
                    t += 1
                    continue
                line_mode = region in LINE_REGIONS
                last, lines, w_ = _job_time(t, bases[region], elem_bits(region, chip), first, count, mp, line_mode)
                rd[region] += lines * lb
                wait += w_
                loaded += lines if line_mode else count
                bw[region] += lines if line_mode else count
                t = last + 2
        fetched_at = t + 1  # F_DONE in cycle t
        fetch += fetched_at - p_k
        f_arrive = t + 1
        # Run sequencer: R_WAIT until the tile is fetched and the writer has finished tile k - 2
        # (the stage bank the run writes); it may still be writing tile k - 1.
        s_k = max(r_arrive, fetched_at, free[0])
        idle["fetch"] += max(0, fetched_at - r_arrive)
        idle["writer"] += max(0, free[0] - max(r_arrive, fetched_at))
        idle["control"] += 3  # R_RUN's start, done seen, back in R_WAIT
        run_start.append(s_k)
        core = int(core_totals[g, j])
        compute += core
        d = s_k + core + 2  # done seen
        r_arrive = d + 1
        # Writer: starts on the tile (the start pulse) once the run is done and it is idle after
        # tile k - 1; per row ROW, CNT_AW, CNT_W, MASK_AW, mask beats, VAL_AW, value beats; then
        # the final ROW, idle from the cycle after. The B responses are awaited only at the end.
        w_k = max(d, free[1])
        cnt = nz[m0:m0 + R, n0:n0 + Nt].sum(axis=1)
        mb = -(-Nt // D)
        vb = -(-cnt * chip.value_bits // D)
        end = w_k + 1 + int((5 + mb + vb).sum())  # the final ROW state
        y = end - 1 - (1 if vb[-1] == 0 else 0)  # last W beat
        free = [free[1], end + 1]
        b_back = y + L + 1  # the last B response, `latency` after the last W beat, counted
        write += end + 1 - w_k
        wr["o_cnt"] += 4 * R
        wr["o_mask"] += mb * lb * R
        wr["o_val"] += int(vb.sum()) * lb
    # R_FINISH until the last tile is written and its B responses are back, then DONE.
    last = max(free[1], b_back)
    write += max(0, b_back - free[1])
    t = max(d + 1, last) + 1
    idle["writer"] += max(0, last - d - 1)
    idle["control"] += 1
    # Every (row, column) is one job of one tile; each match (a non-zero spike word meeting a
    # non-zero weight) is read once on each side, whatever the tiling and the timing.
    # sum_{m,n} |nz(A[m]) & nz(B[:, n])| = sum_k (non-silent words in column k) x (non-zeros in row k)
    matches = int(np.dot(np.count_nonzero(words, axis=0).astype(np.int64),
                         np.count_nonzero(weights, axis=1).astype(np.int64)))
    br = {"a_val": matches, "a_ptr": M * N, "b_val": matches, "b_ptr": M * N, "bias": M * N}
    return AccelTiming(cycles=t, compute=compute, fetch=fetch, write=write, fetch_wait=wait, bytes_read=rd,
                       bytes_written=wr, words_loaded=loaded, tiles=til.groups * til.n_tiles, buffer_writes=bw,
                       buffer_reads=br, pe_busy=busy, core_stalls=stalls, idle=idle)
