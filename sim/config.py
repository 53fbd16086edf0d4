"""Validated, frozen configuration loaded from YAML.

Every configuration object is a frozen dataclass; :func:`load` maps a YAML mapping onto it,
recursively for nested dataclasses. An unknown key, a missing key without default, a value of the
wrong type or one that fails the class's own check raises :class:`~sim.errors.ConfigError` naming
the file and the dotted key.
"""

from __future__ import annotations

import dataclasses
import math
import reprlib
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sim.errors import ConfigError
from sim.params import MAX_UNITS, ChipParams, CoreParams, MemParams, check_int

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

#: Largest YAML file read (configs, manifests): far above any real one, far below a memory bomb.
MAX_YAML_BYTES = 4 * 2**20
#: Largest number of YAML nodes after alias expansion (a "billion laughs" document is refused).
MAX_YAML_NODES = 200_000

_short = reprlib.Repr()
_short.maxstring = _short.maxother = 60
_short.maxlist = _short.maxdict = _short.maxtuple = 6
_short.maxlevel = 3


def short_repr(value) -> str:
    """repr() of a value read from a file, cut short (an error message never expands a YAML bomb)."""
    return _short.repr(value)


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that refuses documents whose alias expansion exceeds :data:`MAX_YAML_NODES`
    nodes, or that refer to themselves, before any Python object is built."""

    def construct_document(self, node):
        sizes: dict[int, int] = {}

        def size(n, active):
            key = id(n)
            if key in sizes:
                return sizes[key]
            if key in active:
                raise yaml.YAMLError("recursive alias")
            active.add(key)
            total = 1
            if isinstance(n, yaml.SequenceNode):
                for c in n.value:
                    total += size(c, active)
                    if total > MAX_YAML_NODES:
                        break
            elif isinstance(n, yaml.MappingNode):
                for k, v in n.value:
                    total += size(k, active) + size(v, active)
                    if total > MAX_YAML_NODES:
                        break
            active.discard(key)
            sizes[key] = total
            if total > MAX_YAML_NODES:
                raise yaml.YAMLError(f"more than {MAX_YAML_NODES} nodes after alias expansion")
            return total

        size(node, set())
        return super().construct_document(node)


def read_yaml(path: Path, fail):
    """Parse the YAML file ``path`` safely and boundedly; ``fail(field, problem)`` raises the caller's
    error (it must not return). Refused: a file over :data:`MAX_YAML_BYTES`, bytes that are not
    UTF-8, invalid YAML, alias expansion beyond :data:`MAX_YAML_NODES` nodes, recursion."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            fail("<file>", f"{size} bytes, more than the {MAX_YAML_BYTES} a YAML file of loas may have")
        raw = path.read_bytes()
    except OSError as exc:
        fail("<file>", f"cannot be read ({exc.strerror or exc})")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        fail("<file>", f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})")
    try:
        return yaml.load(text, Loader=_BoundedLoader)
    except yaml.YAMLError as exc:
        fail("<yaml>", f"not valid YAML ({(str(exc).splitlines() or [type(exc).__name__])[0]})")
    except RecursionError:
        fail("<yaml>", "not valid YAML (nested too deeply)")


#: Upper bound of sizes (tiles): a model allocates arrays of these sizes, so a typo must not reach it.
MAX_DIM = 2**20


def _bounded(name: str, value: int, lo: int, hi: int) -> None:
    check_int(name, value, lo=lo, hi=hi)


@dataclass(frozen=True)
class TileConfig:
    """Tiles of the mntk loop nest (spec/loas.md section 8) and the largest layer the accelerator
    accepts: ``m`` spike rows (the A tile) and ``n`` weight columns (the B tile) resident per tile
    (K is never tiled: a TPPE walks whole fibers), ``a_nnz`` / ``b_nnz`` the packed spike words of
    an A tile / weights of a B tile the tile memories hold, ``max_k`` / ``max_m`` / ``max_n`` the
    longest fiber and the largest M and N. They are the chip's ``tile_rows``, ``tile_cols``,
    ``a_nnz``, ``b_nnz``, ``max_k``, ``max_m``, ``max_n`` (:class:`sim.params.ChipParams`, whose
    defaults and ranges apply; :func:`sim.params.chip_from_config`)."""

    m: int = ChipParams.tile_rows
    n: int = ChipParams.tile_cols
    a_nnz: int = ChipParams.a_nnz
    b_nnz: int = ChipParams.b_nnz
    max_k: int = ChipParams.max_k
    max_m: int = ChipParams.max_m
    max_n: int = ChipParams.max_n
    #: keys older files set that no model reads: key -> why (a clear error instead of "unknown key")
    REMOVED = {"k": "K is not tiled (a TPPE walks whole fibers); delete the key"}

    def __post_init__(self):
        self.check()

    def check(self):
        for name in ("m", "n", "a_nnz", "b_nnz", "max_k", "max_m", "max_n"):
            _bounded(name, getattr(self, name), 1, MAX_DIM)


@dataclass(frozen=True)
class BufferConfig:
    """FiberCache-like global buffer."""

    capacity_kb: int = 256
    banks: int = 16
    line_bytes: int = 32
    REMOVED = {"ways": "the buffer model has no associativity (sim/memory.py); delete the key"}

    def __post_init__(self):
        self.check()

    def check(self):
        _bounded("capacity_kb", self.capacity_kb, 1, 2**22)  # 4 GiB
        for name in ("banks", "line_bytes"):
            _bounded(name, getattr(self, name), 1, MAX_UNITS)


@dataclass(frozen=True)
class LoASConfig(CoreParams):
    """LoAS accelerator parameters (defaults: the paper's Table III, spec/loas.md section 6).

    Parameters
    ----------
    (core)                  every field of :class:`sim.params.CoreParams` (pes, timesteps,
                            chunk_bits, weight_bits, laggy_adders, fifo_depth, lookahead,
                            result_slots, seg_cache, row_prefetch, schedule, acc_bits): their one
                            definition, defaults and checks
    loop_order : str        tile loop order: 'mntk' (LoAS's: a row group's A tile resident while
                            the B tiles stream) or 'nmtk' (the paper's ablation: a B tile resident
                            while the row groups stream); both fidelities, the accelerator's
                            descriptor bit ``nmtk``
    clock_mhz : float       clock
    tile, buffer            see TileConfig, BufferConfig
    dram : MemParams        the DRAM port and the DRAM model (:class:`sim.params.MemParams`: AXI
                            width ``data_bits``, ``burst_beats``, ``latency``, ``beat_cycles``);
                            bandwidth ``data_bits / 8 / beat_cycles`` bytes per cycle, for every design

    Raises
    ------
    ConfigError (from :func:`load`) or ValueError / TypeError (direct construction) on an invalid
    value.
    """

    loop_order: str = "mntk"
    clock_mhz: float = 800.0
    tile: TileConfig = field(default_factory=TileConfig)
    buffer: BufferConfig = field(default_factory=BufferConfig)
    dram: MemParams = field(default_factory=MemParams)
    REMOVED = {"max_k": "the longest fiber is tile.max_k; delete the key",
               "dram_gbps": "the DRAM bandwidth is dram.data_bits / 8 / dram.beat_cycles bytes per cycle at "
                            "clock_mhz; set those and delete the key"}

    def __post_init__(self):
        super().__post_init__()
        self.check()

    def check(self):
        if self.loop_order not in ("mntk", "nmtk"):
            raise ValueError(f"loop_order: must be 'mntk' or 'nmtk', got {self.loop_order!r}")
        if not (math.isfinite(self.clock_mhz) and self.clock_mhz > 0):
            raise ValueError(f"clock_mhz: must be a finite number > 0, got {self.clock_mhz}")
        if not isinstance(self.dram, MemParams):
            raise TypeError(f"dram: must be a MemParams, got {type(self.dram).__name__}")

    @property
    def laggy_cycles(self) -> int:
        """Cycles the laggy prefix-sum needs per chunk (128 / 16 = 8 in LoAS)."""
        return self.chunk_bits // self.laggy_adders


def _type_ok(value, typ) -> bool:
    origin = typing.get_origin(typ)
    if origin is typing.Union:
        return any(_type_ok(value, t) for t in typing.get_args(typ))
    if typ is type(None):
        return value is None
    if typ is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if typ is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, typ)


def from_mapping(cls, data, *, path="<dict>", prefix=""):
    """Build the frozen dataclass `cls` from a mapping, validating keys, types and values."""
    if not isinstance(data, dict):
        raise ConfigError(path, prefix.rstrip(".") or "<root>", f"must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    odd = [k for k in data if not isinstance(k, str)]
    if odd:
        raise ConfigError(path, prefix + short_repr(odd[0]), f"key of type {type(odd[0]).__name__}: every key "
                                                            f"is a name (known: {', '.join(fields)})")
    for name in data:
        if name in getattr(cls, "REMOVED", {}):
            raise ConfigError(path, prefix + str(name), f"no longer a setting: {cls.REMOVED[name]}")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(path, prefix + str(unknown[0]), f"unknown key (known: {', '.join(fields)})")
    kwargs = {}
    for name, value in data.items():
        typ = hints[name]
        key = prefix + name
        if dataclasses.is_dataclass(typ):
            kwargs[name] = from_mapping(typ, value, path=path, prefix=key + ".")
        elif not _type_ok(value, typ):
            want = getattr(typ, "__name__", str(typ))
            raise ConfigError(path, key, f"wrong type {type(value).__name__} (value {short_repr(value)}), "
                                         f"expected {want}")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(path, key, f"must be a finite number, got {value}")
        else:
            try:
                kwargs[name] = float(value) if typ is float else value
            except OverflowError:
                raise ConfigError(path, key, f"must be a finite number, got {short_repr(value)}") from None
    try:
        obj = cls(**kwargs)  # the config classes here validate in __post_init__
        if hasattr(obj, "check"):
            obj.check()
        return obj
    except (TypeError, ValueError) as exc:
        msg = str(exc)
        name, _, problem = msg.partition(": ")
        if problem and name in fields:
            raise ConfigError(path, prefix + name, problem) from None
        raise ConfigError(path, prefix or "<root>", msg) from None


def config_path(path: str | Path) -> Path:
    """The file a config argument names: a path, or a bare name like 'loas' = sim/configs/loas.yaml."""
    p = Path(path)
    if not p.is_file() and (CONFIG_DIR / f"{path}.yaml").exists():
        p = CONFIG_DIR / f"{path}.yaml"
    return p


def load(path: str | Path, cls=LoASConfig):
    """Load a YAML file into `cls`; a bare name like 'loas' means sim/configs/loas.yaml."""
    p = config_path(path)
    if not p.is_file():
        raise ConfigError(p, "<file>", "does not exist")
    def fail(key, problem):
        raise ConfigError(p, key, problem)

    data = read_yaml(p, fail)
    return from_mapping(cls, data if data is not None else {}, path=p)
