"""Energy model (spec/loas.md section 8).

``E = leakage power x runtime + DRAM energy x DRAM bytes + SRAM energy x SRAM bytes
+ energy per operation x operations``, with a breakdown by component (picojoules). Constants live
in ``sim/configs/energy.yaml`` (the paper's artifact values by default) and are loaded into frozen,
validated objects: an unknown key or bad value raises :class:`~sim.errors.ConfigError` naming the
file and the key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

from sim.config import load

COMPONENTS = ("leakage", "dram", "sram", "compute", "index")


def _positive(name: str, v: float) -> None:
    # An energy constant of 0 makes LoAS's energy 0 and every efficiency ratio a division by zero;
    # NaN or inf would be reported as energies. Both are refused where the file is read.
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name}: must be a finite number > 0, got {v}")


@dataclass(frozen=True)
class DesignEnergy:
    """Per-design constants.

    Parameters
    ----------
    op_pj : float           energy of one operation of the design (pJ)
    leakage_mw : float      leakage (static) power of the whole chip (mW)
    index_overhead : float  extra compute energy for index generation, as a fraction of op energy
    """

    op_pj: float = 5.8
    leakage_mw: float = 125.0
    index_overhead: float = 0.0

    def check(self):
        _positive("op_pj", self.op_pj)
        _positive("leakage_mw", self.leakage_mw)
        if not (math.isfinite(self.index_overhead) and self.index_overhead >= 0):
            raise ValueError(f"index_overhead: must be a finite number >= 0, got {self.index_overhead}")


@dataclass(frozen=True)
class DesignEnergies:
    """One :class:`DesignEnergy` per simulated design."""

    loas: DesignEnergy = field(default_factory=lambda: DesignEnergy(5.8))
    sparten: DesignEnergy = field(default_factory=lambda: DesignEnergy(6.15))
    gospa: DesignEnergy = field(default_factory=lambda: DesignEnergy(6.15, index_overhead=0.3))
    gamma: DesignEnergy = field(default_factory=lambda: DesignEnergy(6.15))
    ptb: DesignEnergy = field(default_factory=lambda: DesignEnergy(5.8))
    stellar: DesignEnergy = field(default_factory=lambda: DesignEnergy(1.45))


@dataclass(frozen=True)
class EnergyConfig:
    """Energy constants: SRAM and DRAM energy per access of ``access_bytes`` (nJ), per design
    op energy and leakage (see sim/configs/energy.yaml for the provenance of each number)."""

    access_bytes: int = 32
    sram_nj_per_access: float = 0.0681
    dram_nj_per_access: float = 2.9
    designs: DesignEnergies = field(default_factory=DesignEnergies)

    def check(self):
        if self.access_bytes < 1:
            raise ValueError(f"access_bytes: must be >= 1, got {self.access_bytes}")
        _positive("sram_nj_per_access", self.sram_nj_per_access)
        _positive("dram_nj_per_access", self.dram_nj_per_access)

    @property
    def sram_pj_per_byte(self) -> float:
        return self.sram_nj_per_access * 1000.0 / self.access_bytes

    @property
    def dram_pj_per_byte(self) -> float:
        return self.dram_nj_per_access * 1000.0 / self.access_bytes

    def design(self, name: str) -> DesignEnergy:
        return getattr(self.designs, name)


@lru_cache(maxsize=8)
def load_energy(path: str = "energy") -> EnergyConfig:
    """Load an energy YAML (a bare name means sim/configs/NAME.yaml)."""
    return load(path, EnergyConfig)


def energy_breakdown(design: str, *, cycles: int, clock_mhz: float, ops: int, sram_bytes: int,
                     dram_bytes: int, econf: EnergyConfig) -> dict:
    """Energy of one layer run in pJ, by component (see :data:`COMPONENTS`)."""
    d = econf.design(design)
    runtime_s = cycles / (clock_mhz * 1e6)
    compute = d.op_pj * ops
    return {
        "leakage": d.leakage_mw * 1e-3 * runtime_s * 1e12,
        "dram": econf.dram_pj_per_byte * dram_bytes,
        "sram": econf.sram_pj_per_byte * sram_bytes,
        "compute": compute,
        "index": compute * d.index_overhead,
    }
