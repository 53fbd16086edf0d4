"""Validated, frozen configuration loaded from YAML.

Every configuration object is a frozen dataclass; :func:`load` maps a YAML mapping onto it,
recursively for nested dataclasses. An unknown key, a missing key without default, a value of the
wrong type or one that fails the class's own check raises :class:`~sim.errors.ConfigError` naming
the file and the dotted key.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from sim.errors import ConfigError
from sim.params import CoreParams

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@dataclass(frozen=True)
class TileConfig:
    """Tile sizes of the mntk loop nest (spec/loas.md section 8): ``m`` spike rows and ``n`` weight
    columns resident per tile (K is never tiled: a TPPE walks whole fibers)."""

    m: int = 16
    n: int = 32
    #: keys older files set that no model reads: key -> why (a clear error instead of "unknown key")
    REMOVED = {"k": "K is not tiled (a TPPE walks whole fibers); delete the key"}

    def __post_init__(self):
        self.check()

    def check(self):
        for name in ("m", "n"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")


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
        for name in ("capacity_kb", "banks", "line_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class LoASConfig(CoreParams):
    """LoAS accelerator parameters (defaults: the paper's Table III, spec/loas.md section 6).

    Parameters
    ----------
    (core)                  every field of :class:`sim.params.CoreParams` (pes, timesteps,
                            chunk_bits, weight_bits, laggy_adders, fifo_depth, lookahead,
                            result_slots, seg_cache, row_prefetch, schedule, acc_bits): their one
                            definition, defaults and checks
    loop_order : str        'mntk' (LoAS) or 'nmtk' (ablation)
    clock_mhz, dram_gbps    clock and DRAM bandwidth
    tile, buffer            see TileConfig, BufferConfig

    Raises
    ------
    ConfigError (from :func:`load`) or ValueError / TypeError (direct construction) on an invalid
    value.
    """

    loop_order: str = "mntk"
    clock_mhz: float = 800.0
    dram_gbps: float = 128.0
    tile: TileConfig = field(default_factory=TileConfig)
    buffer: BufferConfig = field(default_factory=BufferConfig)
    REMOVED = {"max_k": "the datapath is sized per build from the layers it holds (hw Capacity); delete the key"}

    def __post_init__(self):
        super().__post_init__()
        self.check()

    def check(self):
        if self.loop_order not in ("mntk", "nmtk"):
            raise ValueError(f"loop_order: must be 'mntk' or 'nmtk', got {self.loop_order!r}")
        if self.clock_mhz <= 0 or self.dram_gbps <= 0:
            raise ValueError("clock_mhz and dram_gbps: must be > 0")

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
            raise ConfigError(path, key, f"wrong type {type(value).__name__} (value {value!r}), expected {want}")
        else:
            kwargs[name] = float(value) if typ is float else value
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


def load(path: str | Path, cls=LoASConfig):
    """Load a YAML file into `cls`; a bare name like 'loas' means sim/configs/loas.yaml."""
    p = Path(path)
    if not p.is_file() and (CONFIG_DIR / f"{path}.yaml").exists():
        p = CONFIG_DIR / f"{path}.yaml"
    if not p.is_file():
        raise ConfigError(p, "<file>", "does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(p, "<yaml>", f"not valid YAML ({str(exc).splitlines()[0]})") from None
    return from_mapping(cls, data if data is not None else {}, path=p)
