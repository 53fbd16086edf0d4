"""Parameters of the LoAS core, one validated frozen object each: :class:`CoreParams` (what the
hardware is built as: lanes, widths, TPPE options, schedule) and :class:`Capacity` (the largest layer
its memories hold). Built from a :class:`~sim.config.LoASConfig` with :meth:`CoreParams.from_config`;
taken by the cycle model (:func:`sim.tppe.core_cycles`), the RTL (``hw.tppe.TPPE``, ``hw.core.Core``),
the host side (``hw.host``) and ``loas rtl``. Defaults and ranges live here only.

Errors are ``ValueError`` / ``TypeError`` whose message starts with ``"<field>: "`` (the YAML loader
turns that into a :class:`~sim.errors.ConfigError` naming the file and key).
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass

import numpy as np

from sim.fibers import MAX_T

#: Core schedules (hw/README.md "Core"): ``lockstep`` = the paper's (all lanes on one column, one
#: broadcast B fiber, a step costs the slowest lane); ``dynamic`` = ours (a lane runs its row's
#: columns back to back and takes the next free row when done).
SCHEDULES = ("lockstep", "dynamic")
#: Upper bound of hardware counts (PEs, FIFO depth, chunk width, ...): a model allocates arrays of
#: these sizes, so a typo like ``pes: 1e9`` must not reach it.
MAX_UNITS = 4096


def check_int(name: str, value, *, lo: int = None, hi: int = None) -> int:
    """Return ``value`` if it is an int in [lo, hi]; else raise TypeError/ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: must be an int, got {value!r} ({type(value).__name__})")
    rng = f" (range {lo}..{hi})" if lo is not None and hi is not None else ""
    if lo is not None and value < lo:
        raise ValueError(f"{name}: must be >= {lo}{rng}, got {value!r}")
    if hi is not None and value > hi:
        raise ValueError(f"{name}: must be <= {hi}{rng}, got {value!r}")
    return int(value)


def check_pow2(name: str, value, hi: int = None) -> int:
    check_int(name, value, lo=1, hi=hi)
    if value & (value - 1):
        raise ValueError(f"{name}: must be a power of two, got {value!r}")
    return int(value)


def check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name}: must be a bool (true or false), got {value!r} ({type(value).__name__})")
    return value


def check_adders(chunk_bits: int, adders) -> int:
    check_int("laggy_adders", adders, lo=1)
    if adders > chunk_bits or chunk_bits % adders:
        raise ValueError(f"laggy_adders: must divide chunk_bits={chunk_bits}, got {adders!r}")
    return int(adders)


def check_timesteps(value) -> int:
    return check_int("timesteps", value, lo=1, hi=MAX_T)


def _bits(n: int) -> int:
    return max(1, int(n).bit_length())


@dataclass(frozen=True)
class CoreParams:
    """What the core is built as (defaults: the paper's Table III plus our TPPE additions).

    Parameters
    ----------
    pes : int            P, TPPE lanes (1..MAX_UNITS)
    timesteps : int      T (1..16)
    chunk_bits : int     W, bitmask chunk width (power of two)
    weight_bits : int    signed weight width (2..16)
    laggy_adders : int   adders of the A-side laggy prefix-sum (divides chunk_bits)
    fifo_depth : int     depth of the TPPE's match queue (>= 1)
    lookahead : int      chunk pairs the F side examines per cycle (1..16; 1 = the paper's scan)
    result_slots : int   jobs whose F side has ended waiting for the L side (1..8)
    seg_cache : bool     keep the walk's segment bases for the resident A row (hw/README.md "TPPE")
    row_prefetch : bool  walk unit + second segment-base bank for the lane's next row
    schedule : str       ``lockstep`` or ``dynamic`` (:data:`SCHEDULES`)
    acc_bits : int|None  accumulator width; None = the overflow-free width for the build's K; a
                         narrower one sets the result's sticky ``overflow`` flag when a sum wraps

    Raises
    ------
    TypeError, ValueError ``"<field>: ..."`` on a value outside its range.
    """

    pes: int = 16
    timesteps: int = 4
    chunk_bits: int = 128
    weight_bits: int = 8
    laggy_adders: int = 16
    fifo_depth: int = 8
    lookahead: int = 4
    result_slots: int = 4
    seg_cache: bool = True
    row_prefetch: bool = True
    schedule: str = "lockstep"
    acc_bits: typing.Optional[int] = None

    def __post_init__(self):
        check_int("pes", self.pes, lo=1, hi=MAX_UNITS)
        check_timesteps(self.timesteps)
        check_pow2("chunk_bits", self.chunk_bits, hi=MAX_UNITS)
        check_int("weight_bits", self.weight_bits, lo=2, hi=16)
        check_adders(self.chunk_bits, self.laggy_adders)
        check_int("fifo_depth", self.fifo_depth, lo=1, hi=MAX_UNITS)
        check_int("lookahead", self.lookahead, lo=1, hi=16)
        check_int("result_slots", self.result_slots, lo=1, hi=8)
        check_bool("seg_cache", self.seg_cache)
        check_bool("row_prefetch", self.row_prefetch)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule: must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.acc_bits is not None:
            check_int("acc_bits", self.acc_bits, lo=self.weight_bits + 1, hi=64)

    @classmethod
    def from_config(cls, cfg, **override) -> "CoreParams":
        """The core of a :class:`~sim.config.LoASConfig` (its fields of the same names), with
        ``override`` replacing some (validated again)."""
        names = [f.name for f in dataclasses.fields(cls)]
        return cls(**{**{n: getattr(cfg, n) for n in names}, **override})

    def replace(self, **kw) -> "CoreParams":
        return dataclasses.replace(self, **kw)

    @property
    def segments(self) -> int:
        """Segments of ``laggy_adders`` bits per chunk (walk cycles per chunk)."""
        return self.chunk_bits // self.laggy_adders

    @property
    def prefetch(self) -> bool:
        """The walk unit exists: there is a walk to hide (S > 1) and a cache to fill."""
        return self.row_prefetch and self.seg_cache and self.segments > 1

    def chunks(self, k: int) -> int:
        """Chunks of a fiber of k positions (at least 1)."""
        return max(1, -(-int(k) // self.chunk_bits))


@dataclass(frozen=True)
class Capacity:
    """The largest layer a core build holds (memory depths and address widths); the layer's own
    shape is given at run time, so one build serves every layer that fits.

    Parameters
    ----------
    rows, cols, k : int      M, N, K (>= 1)
    a_nnz, b_nnz : int|None  packed spike words / weights (default M*K and K*N)
    bias_bits : int          signed bias width (1..32)
    """

    rows: int = 16
    cols: int = 16
    k: int = 128
    a_nnz: int | None = None
    b_nnz: int | None = None
    bias_bits: int = 16

    def __post_init__(self):
        for name in ("rows", "cols", "k"):
            check_int(name, getattr(self, name), lo=1)
        if self.a_nnz is None:
            object.__setattr__(self, "a_nnz", self.rows * self.k)
        if self.b_nnz is None:
            object.__setattr__(self, "b_nnz", self.k * self.cols)
        check_int("a_nnz", self.a_nnz, lo=1)
        check_int("b_nnz", self.b_nnz, lo=1)
        check_int("bias_bits", self.bias_bits, lo=1, hi=32)

    @classmethod
    def fit(cls, words, weights, bias=None, *, exact: bool = False) -> "Capacity":
        """Capacity for this layer: by default at least :data:`SHARED` (grown to powers of two when
        the layer is larger) so that all layers of a workload share one build; ``exact=True`` sizes
        the memories to the layer (small, fast builds for tests)."""
        need = cls._needs(words, weights, bias)
        need.update(a_nnz=max(1, need["a_nnz"]), b_nnz=max(1, need["b_nnz"]), bias_bits=max(16, need["bias_bits"]))
        if not exact:
            shared = dataclasses.asdict(SHARED)
            need = {key: max(shared[key], v if key == "bias_bits" else 1 << max(0, int(v - 1).bit_length()))
                    for key, v in need.items()}
        return cls(**need)

    @staticmethod
    def _needs(words, weights, bias) -> dict:
        """What a layer uses of each field: its shape, packed operand counts and bias width."""
        M, K = np.shape(words)
        N = np.shape(weights)[1]
        bias_abs = int(np.abs(np.asarray(bias, dtype=np.int64)).max(initial=0)) if bias is not None else 0
        return {"rows": M, "cols": N, "k": K, "a_nnz": int(np.count_nonzero(words)),
                "b_nnz": int(np.count_nonzero(weights)), "bias_bits": bias_abs.bit_length() + 1}

    def check(self, words, weights, bias=None) -> None:
        """Refuse a layer this build cannot hold: ValueError ``"<field>: ..."`` naming the first
        dimension that does not fit (a packed operand past its memory would wrap onto the layer's
        first words, silently)."""
        need = self._needs(words, weights, bias)
        what = {"rows": "rows (M)", "cols": "columns (N)", "k": "K", "a_nnz": "non-zero spike words",
                "b_nnz": "non-zero weights", "bias_bits": "bias bits"}
        for key, v in need.items():
            if v > getattr(self, key):
                raise ValueError(f"{key}: the layer has {v} {what[key]}, this build holds {getattr(self, key)}")

    def replace(self, **kw) -> "Capacity":
        return dataclasses.replace(self, **kw)


#: Capacities of the shared build: one Verilator build serves every layer up to this size. Kept
#: modest: Amaranth writes every memory word's initial value into the Verilog, so capacity costs
#: generation and build time; larger layers grow the capacities to the next power of two.
SHARED = Capacity(rows=256, cols=128, k=1152, a_nnz=1 << 16, b_nnz=1 << 14, bias_bits=24)


def acc_bits_for(*, chunks: int, chunk_bits: int, weight_bits: int, bias_bits: int) -> int:
    """Accumulator width for which no fiber of chunks*chunk_bits positions can overflow."""
    return _bits((1 << (bias_bits - 1)) + chunks * chunk_bits * (1 << (weight_bits - 1))) + 1


@dataclass(frozen=True)
class MemParams:
    """The accelerator's DRAM port and the testbench's DRAM model (hw/README.md "Accelerator").

    Parameters
    ----------
    data_bits : int      AXI data width (power of two, 32..1024; 512 = 64 bytes per cycle)
    addr_bits : int      AXI byte-address width (16..64)
    burst_beats : int    longest burst (power of two, 1..256; bursts never cross a multiple of
                         burst_beats * data_bits / 8 bytes, so never a 4 KiB boundary at 64 x 64 B)
    latency : int        DRAM model: cycles from an accepted AR/AW to its first R beat / B response
    beat_cycles : int    DRAM model: cycles per data beat (1 = one beat per cycle)

    Raises
    ------
    TypeError, ValueError ``"<field>: ..."``.
    """

    data_bits: int = 512
    addr_bits: int = 32
    burst_beats: int = 16
    latency: int = 20
    beat_cycles: int = 1

    def __post_init__(self):
        check_pow2("data_bits", self.data_bits, hi=1024)
        check_int("data_bits", self.data_bits, lo=32, hi=1024)
        check_int("addr_bits", self.addr_bits, lo=16, hi=64)
        check_pow2("burst_beats", self.burst_beats, hi=256)
        if self.burst_beats * self.data_bits > 4096 * 8:
            raise ValueError(f"burst_beats: a burst of {self.burst_beats} x {self.data_bits // 8} bytes "
                             f"would cross 4 KiB, got {self.burst_beats!r}")
        check_int("latency", self.latency, lo=1, hi=MAX_UNITS)
        check_int("beat_cycles", self.beat_cycles, lo=1, hi=64)

    @property
    def line_bytes(self) -> int:
        """Bytes per data beat (DRAM bytes per cycle at beat_cycles = 1)."""
        return self.data_bits // 8

    def bytes_per_cycle(self) -> float:
        return self.line_bytes / self.beat_cycles

    def replace(self, **kw) -> "MemParams":
        return dataclasses.replace(self, **kw)


@dataclass(frozen=True)
class ChipParams:
    """The whole accelerator as built (one build runs every layer whose tiles fit).

    Parameters
    ----------
    core : CoreParams        the TPPE array
    tile_rows : int          A tile: spike rows resident at once (the row group)
    tile_cols : int          B tile: weight columns resident at once (at most 1024)
    max_k : int              longest fiber K (the chunks of every resident fiber)
    max_m, max_n : int       largest layer M and N the descriptor accepts
    a_nnz, b_nnz : int       packed spike words of an A tile / weights of a B tile
    buffer_kib : int         global buffer capacity; two A and two B tiles (double-buffered), their
                             pointers and the output stage's two tiles must fit (checked here)
    buffer_banks : int       banks of the global buffer
    bias_bits : int          signed bias width (1..32)
    mem : MemParams          the DRAM port

    Raises
    ------
    TypeError, ValueError ``"<field>: ..."`` (``buffer_kib`` when the tiles do not fit).
    """

    core: CoreParams = CoreParams()
    tile_rows: int = 32
    tile_cols: int = 64
    max_k: int = 4608
    max_m: int = 1024
    max_n: int = 512
    a_nnz: int = 32768
    b_nnz: int = 32768
    buffer_kib: int = 256
    buffer_banks: int = 16
    bias_bits: int = 24
    mem: MemParams = MemParams()

    def __post_init__(self):
        if not isinstance(self.core, CoreParams):
            raise TypeError(f"core: must be a CoreParams, got {type(self.core).__name__}")
        if not isinstance(self.mem, MemParams):
            raise TypeError(f"mem: must be a MemParams, got {type(self.mem).__name__}")
        check_int("tile_rows", self.tile_rows, lo=1, hi=MAX_UNITS)
        check_int("tile_cols", self.tile_cols, lo=1, hi=1024)
        for name in ("max_k", "max_m", "max_n"):
            check_int(name, getattr(self, name), lo=1, hi=1 << 20)
        check_int("a_nnz", self.a_nnz, lo=1, hi=1 << 24)
        check_int("b_nnz", self.b_nnz, lo=1, hi=1 << 24)
        check_int("buffer_kib", self.buffer_kib, lo=1, hi=1 << 20)
        check_pow2("buffer_banks", self.buffer_banks, hi=256)
        check_int("bias_bits", self.bias_bits, lo=1, hi=32)
        for name, bits_ in (("chunk_bits", self.core.chunk_bits), ("timesteps", self.value_bits), ("weight_bits", self.weight_store_bits)):
            if bits_ > self.mem.data_bits:
                raise ValueError(f"mem.data_bits: must hold one {name} element ({bits_} bits), got {self.mem.data_bits}")
        ml = -(-self.tile_cols * self.value_bits // self.mem.data_bits)
        if ml > self.mem.burst_beats:
            raise ValueError(f"tile_cols: a row's packed output words ({self.tile_cols} x {self.value_bits} bits) "
                             f"must fit one burst of {self.mem.burst_beats} x {self.mem.data_bits} bits, got {self.tile_cols}")
        if self.buffer_bytes() > self.buffer_kib * 1024:
            raise ValueError(f"buffer_kib: the tiles need {self.buffer_bytes()} bytes, more than "
                             f"{self.buffer_kib} KiB (shrink tile_rows, tile_cols, a_nnz, b_nnz or max_k)")

    @property
    def value_bits(self) -> int:
        """Bits of one packed spike word in DRAM and the buffer (T rounded up to a power of two)."""
        return 1 << max(0, (self.core.timesteps - 1).bit_length())

    @property
    def weight_store_bits(self) -> int:
        return 1 << max(0, (self.core.weight_bits - 1).bit_length())

    def capacity(self) -> Capacity:
        """The core's memories: one A tile and one B tile (the resident part of the buffer)."""
        D = self.mem.data_bits  # a tile's values start anywhere in their first line
        return Capacity(rows=self.tile_rows, cols=self.tile_cols, k=self.max_k, a_nnz=self.a_nnz + D // self.value_bits,
                        b_nnz=self.b_nnz + D // self.weight_store_bits, bias_bits=self.bias_bits)

    def buffer_bytes(self) -> int:
        """Buffer bytes the tiles occupy: two A tiles (masks, words, pointers), two B tiles
        (masks, weights, pointers, bias) and two output tiles of the stage (mask bit and packed
        word per output, counts) -- all double-buffered."""
        C = self.core.chunks(self.max_k)
        W = self.core.chunk_bits
        tiles = (self.tile_rows * C * W + self.a_nnz * self.value_bits + (self.tile_rows + 1) * 32
                 + self.tile_cols * C * W + self.b_nnz * self.weight_store_bits + (self.tile_cols + 1) * 32
                 + self.tile_cols * 32)
        stage = self.tile_rows * self.tile_cols * (1 + self.value_bits) + self.tile_rows * 32
        bits = 2 * (tiles + stage)
        return -(-bits // 8)

    def replace(self, **kw) -> "ChipParams":
        return dataclasses.replace(self, **kw)


#: ChipParams field -> the LoASConfig key it comes from (:func:`chip_from_config`)
CHIP_KEYS = {"tile_rows": "tile.m", "tile_cols": "tile.n", "a_nnz": "tile.a_nnz", "b_nnz": "tile.b_nnz",
             "max_k": "tile.max_k", "max_m": "tile.max_m", "max_n": "tile.max_n", "buffer_kib": "buffer.capacity_kb",
             "buffer_banks": "buffer.banks", "mem.data_bits": "dram.data_bits"}


def chip_from_config(cfg, **override) -> ChipParams:
    """The chip of a :class:`~sim.config.LoASConfig`: its core, its tiles and layer limits
    (``tile.*``), its buffer's capacity and banks (``buffer.capacity_kb``, ``buffer.banks``) and its
    DRAM port (``dram``), the other fields at their defaults or ``override``.

    Raises
    ------
    ValueError ``"<config key>: ..."`` (:data:`CHIP_KEYS`) when the chip cannot be built, e.g. tiles
    that do not fit ``buffer.capacity_kb``.
    """
    t = cfg.tile
    kw = dict(core=CoreParams.from_config(cfg), tile_rows=t.m, tile_cols=t.n, a_nnz=t.a_nnz, b_nnz=t.b_nnz,
              max_k=t.max_k, max_m=t.max_m, max_n=t.max_n, buffer_kib=cfg.buffer.capacity_kb,
              buffer_banks=cfg.buffer.banks, mem=cfg.dram)
    try:
        return ChipParams(**{**kw, **override})
    except ValueError as exc:
        name, sep, problem = str(exc).partition(": ")
        if sep and name in CHIP_KEYS and name not in override:
            import re  # the problem's own hints, in the configuration's names

            problem = re.sub(r"\b(tile_rows|tile_cols|a_nnz|b_nnz|max_k)\b", lambda m: CHIP_KEYS[m.group(1)], problem)
            raise ValueError(f"{CHIP_KEYS[name]}: {problem}") from None
        raise


#: Address-to-bank mappings of the global buffer (hw/README.md "Global buffer"): ``line`` = line
#: a in bank a mod banks (consecutive lines in consecutive banks: a fiber streams over every bank),
#: ``block`` = bank a // lines_per_bank (each bank one contiguous block of lines).
INTERLEAVES = ("line", "block")


@dataclass(frozen=True)
class BufferParams:
    """The global buffer as built (hw/buffer.py ``GlobalBuffer``, sim/buffer.py ``buffer_timing``):
    ``banks`` banks of single-port synchronous SRAM, each ``lines_per_bank`` lines of ``line_bits``.

    Parameters
    ----------
    banks : int           banks (power of two, 1..256); one access (a read or a write) per bank per cycle
    line_bits : int       bits of one line, the unit of every read and write (power of two, 8..4096)
    lines_per_bank : int  lines per bank (power of two, 1..2^20)
    requesters : int      read requesters R (1..64), each a stream of {addr, tag} answered one cycle
                          after its grant
    tag_bits : int        bits of the tag a read returns with its data (1..32)
    interleave : str      address-to-bank mapping, one of :data:`INTERLEAVES`

    Addresses are line addresses 0 .. banks * lines_per_bank - 1.

    Raises
    ------
    TypeError, ValueError ``"<field>: ..."``.
    """

    banks: int = 16
    line_bits: int = 512
    lines_per_bank: int = 256
    requesters: int = 17
    tag_bits: int = 8
    interleave: str = "line"

    def __post_init__(self):
        check_pow2("banks", self.banks, hi=256)
        check_pow2("line_bits", self.line_bits, hi=4096)
        check_int("line_bits", self.line_bits, lo=8)
        check_pow2("lines_per_bank", self.lines_per_bank, hi=1 << 20)
        check_int("requesters", self.requesters, lo=1, hi=64)
        check_int("tag_bits", self.tag_bits, lo=1, hi=32)
        if self.interleave not in INTERLEAVES:
            raise ValueError(f"interleave: must be one of {', '.join(INTERLEAVES)}, got {self.interleave!r}")

    @classmethod
    def from_chip(cls, chip: "ChipParams", *, requesters: int | None = None, line_bits: int | None = None,
                  **kw) -> "BufferParams":
        """The buffer of a chip: ``chip.buffer_banks`` banks holding ``chip.buffer_kib`` KiB in lines of
        ``line_bits`` (default the DRAM line, ``chip.mem.data_bits``: one fetched beat is one write);
        ``requesters`` default P + 1 (one per lane and the B broadcast requester, hw/README.md
        "Global buffer"). Raises ``ValueError("buffer_kib: ...")`` when the capacity is not a whole
        power-of-two number of lines per bank."""
        line_bits = chip.mem.data_bits if line_bits is None else line_bits
        check_pow2("line_bits", line_bits, hi=4096)
        bits_ = chip.buffer_kib * 1024 * 8
        per_bank, rest = divmod(bits_, chip.buffer_banks * line_bits)
        if rest or per_bank < 1 or per_bank & (per_bank - 1):
            raise ValueError(f"buffer_kib: {chip.buffer_kib} KiB is not a power-of-two number of {line_bits}-bit "
                             f"lines in each of {chip.buffer_banks} banks")
        return cls(banks=chip.buffer_banks, line_bits=line_bits, lines_per_bank=per_bank,
                   requesters=chip.core.pes + 1 if requesters is None else requesters, **kw)

    @property
    def lines(self) -> int:
        """Lines of the whole buffer (the address range)."""
        return self.banks * self.lines_per_bank

    @property
    def kib(self) -> float:
        return self.lines * self.line_bits / 8192

    def bank_of(self, addr):
        """Bank of line address(es) ``addr`` (int or numpy array)."""
        return addr % self.banks if self.interleave == "line" else addr // self.lines_per_bank

    def row_of(self, addr):
        """Line within its bank of line address(es) ``addr``."""
        return addr // self.banks if self.interleave == "line" else addr % self.lines_per_bank

    def replace(self, **kw) -> "BufferParams":
        return dataclasses.replace(self, **kw)
