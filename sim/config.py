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


def _is_pow2(v: int) -> bool:
    return v > 0 and not v & (v - 1)


#: Upper bounds of hardware counts (PEs, FIFO depth, chunk width, banks, ...) and of sizes (tiles,
#: max_k): a model allocates arrays of these sizes, so a typo like ``pes: 1e9`` must not reach it.
MAX_UNITS = 4096
MAX_DIM = 2**20


def _bounded(name: str, value: int, lo: int, hi: int) -> None:
    if value < lo:
        raise ValueError(f"{name}: must be >= {lo}, got {value}")
    if value > hi:
        raise ValueError(f"{name}: must be <= {hi}, got {value}")


@dataclass(frozen=True)
class TileConfig:
    """Tile sizes of the mntk loop nest (spec/loas.md section 8)."""

    m: int = 16
    k: int = 128
    n: int = 32

    def check(self):
        for name in ("m", "k", "n"):
            _bounded(name, getattr(self, name), 1, MAX_DIM)


@dataclass(frozen=True)
class BufferConfig:
    """FiberCache-like global buffer."""

    capacity_kb: int = 256
    banks: int = 16
    ways: int = 16
    line_bytes: int = 32

    def check(self):
        _bounded("capacity_kb", self.capacity_kb, 1, 2**22)  # 4 GiB
        for name in ("banks", "ways", "line_bytes"):
            _bounded(name, getattr(self, name), 1, MAX_UNITS)


@dataclass(frozen=True)
class LoASConfig:
    """LoAS accelerator parameters (defaults: the paper's Table III, spec/loas.md section 6).

    Parameters
    ----------
    pes : int               number of TPPEs (P)
    timesteps : int         T the hardware is built for (1..16)
    chunk_bits : int        bitmask chunk width (power of two)
    laggy_adders : int      adders of the A-side laggy prefix-sum (divides chunk_bits)
    fifo_depth : int        depth of FIFO-mp and FIFO-B
    weight_bits : int       weight width
    acc_bits : int | None   accumulator width; None = derived from max_k so overflow is impossible
    max_k : int             largest K the datapath is sized for
    loop_order : str        'mntk' (LoAS) or 'nmtk' (ablation)
    schedule : str          TPPE lanes: 'lockstep' (the paper's: all on one column, one broadcast B
                            fiber, a step costs the slowest lane) or 'dynamic' (ours: each lane runs
                            its row's columns back to back and takes the next free row; B fibers
                            read per lane) -- hw/README.md "Core"
    lookahead : int         chunk pairs a TPPE's F side examines per cycle (1..16; hw TPPE
                            ``lookahead``)
    result_slots : int      jobs a TPPE keeps whose F side has ended while the L side finishes their
                            corrections (1..8; hw TPPE ``result_slots``): the F side runs up to this
                            many jobs ahead of the corrections
    row_prefetch : bool     a TPPE's walk unit fills a second segment-base bank with the lane's next
                            row while the current one runs (hw TPPE ``row_prefetch``; ours)
    clock_mhz, dram_gbps    clock and DRAM bandwidth
    tile, buffer            see TileConfig, BufferConfig

    Raises
    ------
    ConfigError (from :func:`load`) or ValueError (direct construction) on an invalid value.
    """

    pes: int = 16
    timesteps: int = 4
    chunk_bits: int = 128
    laggy_adders: int = 16
    fifo_depth: int = 8
    weight_bits: int = 8
    acc_bits: typing.Optional[int] = None
    max_k: int = 4608
    loop_order: str = "mntk"
    schedule: str = "lockstep"
    lookahead: int = 4
    result_slots: int = 4
    row_prefetch: bool = True
    clock_mhz: float = 800.0
    dram_gbps: float = 128.0
    tile: TileConfig = field(default_factory=TileConfig)
    buffer: BufferConfig = field(default_factory=BufferConfig)

    def check(self):
        _bounded("pes", self.pes, 1, MAX_UNITS)
        if not 1 <= self.timesteps <= 16:
            raise ValueError(f"timesteps: must be in 1..16, got {self.timesteps}")
        if not _is_pow2(self.chunk_bits) or self.chunk_bits > MAX_UNITS:
            raise ValueError(f"chunk_bits: must be a power of two <= {MAX_UNITS}, got {self.chunk_bits}")
        if self.laggy_adders < 1 or self.chunk_bits % self.laggy_adders:
            raise ValueError(f"laggy_adders: must divide chunk_bits={self.chunk_bits}, got {self.laggy_adders}")
        _bounded("fifo_depth", self.fifo_depth, 1, MAX_UNITS)
        if not 2 <= self.weight_bits <= 16:
            raise ValueError(f"weight_bits: must be in 2..16, got {self.weight_bits}")
        if self.acc_bits is not None and not self.weight_bits < self.acc_bits <= 64:
            raise ValueError(f"acc_bits: must be in {self.weight_bits + 1}..64, got {self.acc_bits}")
        _bounded("max_k", self.max_k, 1, MAX_DIM)
        if self.loop_order not in ("mntk", "nmtk"):
            raise ValueError(f"loop_order: must be 'mntk' or 'nmtk', got {self.loop_order!r}")
        if self.schedule not in ("lockstep", "dynamic"):
            raise ValueError(f"schedule: must be 'lockstep' or 'dynamic', got {self.schedule!r}")
        if not 1 <= self.lookahead <= 16:
            raise ValueError(f"lookahead: must be in 1..16, got {self.lookahead}")
        if not 1 <= self.result_slots <= 8:
            raise ValueError(f"result_slots: must be in 1..8, got {self.result_slots}")
        if not isinstance(self.row_prefetch, bool):
            raise ValueError(f"row_prefetch: must be true or false, got {self.row_prefetch!r}")
        for name in ("clock_mhz", "dram_gbps"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name}: must be a finite number > 0, got {v}")

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
        obj = cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(path, prefix or "<root>", str(exc)) from None
    try:
        if hasattr(obj, "check"):
            obj.check()
    except ValueError as exc:
        msg = str(exc)
        name, _, problem = msg.partition(": ")
        raise ConfigError(path, prefix + name if problem else prefix or "<root>", problem or msg) from None
    return obj


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
