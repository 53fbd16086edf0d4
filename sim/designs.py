"""The registry of simulated designs: one entry per accelerator, read by the models, the reports and
the CLI's ``choices`` alike.

Each :class:`Design` names its cycle-level model (``fidelity: cycle``, sim/loas.py and
sim/baselines.py) and, where the LoAS authors' simulator has one, its paper-method model
(``fidelity: paper``, :mod:`sim.paper`, spec artifact.md). Models are resolved on first use, so
importing this module (as ``loas --help`` does) loads no model code.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

FIDELITIES = ("cycle", "paper", "both")


@dataclass(frozen=True)
class Design:
    """One accelerator.

    Parameters
    ----------
    name : str      registry key and CLI name
    title : str     name in reports (the paper's)
    kind : str      'loas', 'dual_sparse' (per-timestep dual-sparse baselines) or 'dense_weight'
    cycle : str     'module:function' of the cycle-level model (signature of
                    :func:`sim.loas.simulate_layer`)
    paper : bool    whether :mod:`sim.paper` models it (the LoAS authors' simulator covers it)
    """

    name: str
    title: str
    kind: str
    cycle: str
    paper: bool

    def cycle_model(self):
        module, fn = self.cycle.split(":")
        return getattr(importlib.import_module(module), fn)


REGISTRY = (
    Design("loas", "LoAS", "loas", "sim.loas:simulate_layer", True),
    Design("sparten", "SparTen-S", "dual_sparse", "sim.baselines:sparten", True),
    Design("gospa", "GoSPA-S", "dual_sparse", "sim.baselines:gospa", True),
    Design("gamma", "Gamma-S", "dual_sparse", "sim.baselines:gamma", True),
    Design("ptb", "PTB", "dense_weight", "sim.baselines:ptb", False),
    Design("stellar", "Stellar", "dense_weight", "sim.baselines:stellar", False),
)
_BY_NAME = {d.name: d for d in REGISTRY}

#: every design name, LoAS first (the CLI's ``--design`` choices)
NAMES = tuple(_BY_NAME)
#: the designs LoAS is compared with
BASELINES = tuple(n for n in NAMES if n != "loas")
#: designs of a kind
DUAL_SPARSE = tuple(d.name for d in REGISTRY if d.kind == "dual_sparse")
DENSE_WEIGHT = tuple(d.name for d in REGISTRY if d.kind == "dense_weight")
#: designs with a paper-method model
PAPER = tuple(d.name for d in REGISTRY if d.paper)


def get(name: str) -> Design:
    """The registered design ``name``.

    Raises
    ------
    ValueError
        For an unknown name (the message lists the known ones).
    """
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown design {name!r}; known: {', '.join(NAMES)}") from None


def cycle_models() -> dict:
    """name -> cycle-level model function, for every design."""
    return {d.name: d.cycle_model() for d in REGISTRY}


def simulate(design: str, words, weights, cfg=None, **kw):
    """Simulate one layer on the named design's cycle-level model; returns a
    :class:`~sim.result.LayerSim`."""
    return get(design).cycle_model()(words, weights, cfg, **kw)
