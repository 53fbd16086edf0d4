"""The result every design model returns (:class:`LayerSim`) and the first and last steps they
share: :func:`prologue` (default configuration, T, validated operands), :func:`layer_sim` (energy
from the counts, the result) and, for the analytical baselines, :func:`finish` (compute overlapped
with bandwidth-bound memory time, then :func:`layer_sim`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from sim.config import LoASConfig
from sim.energy import EnergyConfig, energy_breakdown, load_energy
from sim.golden import check_gemm
from sim.memory import Traffic, memory_timing


@dataclass(frozen=True, eq=False)
class LayerSim:
    """Result of simulating one layer on one design (all designs share this type).

    Attributes
    ----------
    design, layer : str
    M, K, N, T : int
    cycles : int                 total cycles (LoAS: the accelerator's, sim.memory.accel_timing;
                                 the baselines: compute and memory overlapped, plus first fill)
    compute_cycles : int         cycles of the PE array alone
    stalls : dict[str, int]      the PE array's stall causes (lane cycles; LoAS: sim.tppe's, summed
                                 over tiles), plus the cycles the memory system adds beyond compute:
                                 LoAS ``fetch`` / ``writer`` / ``control`` (the core idle waiting for
                                 a tile's fetch, for the output writer, for the sequencers), the
                                 baselines ``dram`` / ``buffer`` (bandwidth beyond compute)
    effectual_ops : int          accumulations the design performs (for LoAS: the golden match
                                 count; for per-timestep designs: spike x weight pairs)
    chunks_scanned : int         128-bit bitmask chunk pairs joined (inner-product designs; else 0)
    pe_busy : list[int]          busy cycles per PE
    sram, dram : dict[str, int]  bytes by operand (:data:`sim.memory.OPERANDS`)
    buffer_hits, buffer_misses : int   global buffer: LoAS the lanes' element reads and the lines
                                 filled from DRAM; the baselines lines hit and missed
    energy : dict[str, float]    pJ by component (:data:`sim.energy.COMPONENTS`)
    clock_mhz : float
    detail : dict                design-specific figures
    """

    design: str
    layer: str
    M: int
    K: int
    N: int
    T: int
    cycles: int
    compute_cycles: int
    stalls: dict
    effectual_ops: int
    chunks_scanned: int
    pe_busy: list
    sram: dict
    dram: dict
    buffer_hits: int
    buffer_misses: int
    energy: dict
    clock_mhz: float
    detail: dict = field(default_factory=dict)

    @property
    def sram_bytes(self) -> int:
        return int(sum(self.sram.values()))

    @property
    def dram_bytes(self) -> int:
        return int(sum(self.dram.values()))

    @property
    def energy_total(self) -> float:
        return float(sum(self.energy.values()))

    @property
    def time_s(self) -> float:
        return self.cycles / (self.clock_mhz * 1e6)

    @property
    def pe_utilization(self) -> float:
        return float(np.mean(self.pe_busy)) / self.cycles if self.cycles else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(sram_bytes=self.sram_bytes, dram_bytes=self.dram_bytes, energy_pj=self.energy_total,
                 energy=self.energy_total, energy_breakdown=dict(self.energy), time_s=self.time_s,
                 pe_utilization=self.pe_utilization)
        return d


def finish(design: str, layer: str, *, M, K, N, T, compute_cycles: int, pe_busy, core_stalls: dict,
           effectual_ops: int, chunks_scanned: int, traffic: Traffic, cfg: LoASConfig,
           econf: EnergyConfig | None, first_tile_bytes: float = 0.0, detail: dict | None = None,
           energy_ops: int | None = None) -> LayerSim:
    """Overlap compute with bandwidth-bound memory time (:func:`sim.memory.memory_timing`), add the
    stall causes and the energy: the last step of the analytical baseline models."""
    mt = memory_timing(traffic, cfg, first_tile_bytes=first_tile_bytes)
    compute_cycles = int(compute_cycles)
    mem = max(mt.dram_cycles, mt.sram_cycles)
    cycles = max(compute_cycles, mem) + mt.fill_cycles
    stalls = {k: int(v) for k, v in core_stalls.items()}
    extra = max(0, mem - compute_cycles)
    stalls["dram"] = (extra if mt.dram_cycles >= mt.sram_cycles else 0) + mt.fill_cycles
    stalls["buffer"] = extra if mt.dram_cycles < mt.sram_cycles else 0
    det = {"dram_cycles": mt.dram_cycles, "buffer_cycles": mt.sram_cycles, "fill_cycles": mt.fill_cycles,
           "buffer_accesses": mt.buffer_accesses}
    det.update(detail or {})
    return layer_sim(design, layer, M=M, K=K, N=N, T=T, cycles=cycles, compute_cycles=compute_cycles,
                     pe_busy=pe_busy, stalls=stalls, effectual_ops=effectual_ops, chunks_scanned=chunks_scanned,
                     traffic=traffic, buffer_hits=mt.buffer_hits, buffer_misses=mt.buffer_misses, cfg=cfg,
                     econf=econf, detail=det, energy_ops=energy_ops)


def layer_sim(design: str, layer: str, *, M, K, N, T, cycles: int, compute_cycles: int, pe_busy, stalls: dict,
              effectual_ops: int, chunks_scanned: int, traffic: Traffic, buffer_hits: int, buffer_misses: int,
              cfg: LoASConfig, econf: EnergyConfig | None, detail: dict | None = None,
              energy_ops: int | None = None) -> LayerSim:
    """The :class:`LayerSim` of a layer whose cycles and traffic are known, with its energy
    (:func:`sim.energy.energy_breakdown` of the cycles, the operations and the bytes)."""
    econf = econf or load_energy()
    energy = energy_breakdown(design, cycles=int(cycles), clock_mhz=cfg.clock_mhz,
                              ops=effectual_ops if energy_ops is None else energy_ops,
                              sram_bytes=traffic.sram_total, dram_bytes=traffic.dram_total, econf=econf)
    return LayerSim(design=design, layer=layer, M=int(M), K=int(K), N=int(N), T=int(T), cycles=int(cycles),
                    compute_cycles=int(compute_cycles), stalls={k: int(v) for k, v in stalls.items()},
                    effectual_ops=int(effectual_ops), chunks_scanned=int(chunks_scanned),
                    pe_busy=[int(b) for b in np.asarray(pe_busy).ravel()], sram=dict(traffic.sram),
                    dram=dict(traffic.dram), buffer_hits=int(buffer_hits), buffer_misses=int(buffer_misses),
                    energy=energy, clock_mhz=cfg.clock_mhz, detail=dict(detail or {}))


def prologue(words, weights, cfg, T):
    """Common start of every design's model: default config, T, validated operands and shape."""
    cfg = cfg or LoASConfig()
    T = int(T or cfg.timesteps)
    words, weights = check_gemm(words, weights, T)
    return cfg, T, words, weights, words.shape[0], words.shape[1], weights.shape[1]


__all__ = ["LayerSim", "finish", "layer_sim", "prologue"]
