"""Memory side of the cycle-level models: operand sizes, the FiberCache-like buffer, DRAM.

Traffic is counted in bytes per *operand* so that every design reports the same categories:

* ``spikes``   packed spike values (LoAS: T bits per non-silent word) or spike coordinates (Gamma-S)
* ``weights``  non-zero weight values (dense weights for PTB / Stellar), plus their coordinates
* ``bitmasks`` every bitmask bit (input, weight and output fibers)
* ``outputs``  packed output values (LoAS) or output spike coordinates
* ``psums``    partial sums and membrane potentials that cross timesteps or are merged through memory

Buffer model (an assumption of ours, written down here once): the global buffer behaves like
Gamma's FiberCache, i.e. the accelerator knows its future accesses (fibers are fetched explicitly,
replacement is by next use). For an operand of ``size`` bytes that is swept ``passes`` times in the
same order while ``avail`` bytes of buffer are free for it, the first pass misses completely and
each later pass misses on ``max(0, size - avail)`` bytes (an optimal policy keeps ``avail`` bytes
of the cyclic stream resident; LRU would keep none). Banks bound the buffer bandwidth:
``banks * line_bytes`` bytes per cycle. DRAM transfers overlap compute (double buffering), so a
layer takes ``max(compute, DRAM, buffer)`` cycles plus the fill of its first tile.
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
    """DRAM bytes per accelerator clock cycle (128 GB/s at 800 MHz = 160 B/cycle)."""
    return cfg.dram_gbps * 1e9 / (cfg.clock_mhz * 1e6)


def capacity_bytes(cfg) -> int:
    return cfg.buffer.capacity_kb * 1024
