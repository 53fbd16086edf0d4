"""Errors a user can cause. The CLI turns each into a one-line message and exit code 2.

Every message names the file (or command-line option), the field and the offending value, so the
user can fix the input without reading a traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Base class for mistakes in user input (files, options, parameters)."""


class TraceError(UserError):
    """A trace file or manifest is missing, corrupt or inconsistent.

    Parameters
    ----------
    path : str or Path
        The file at fault.
    field : str
        The field (npz member, manifest key) at fault.
    problem : str
        What is wrong, including the offending value.
    """

    def __init__(self, path, field: str, problem: str):
        self.path = str(path)
        self.field = field
        self.problem = problem
        super().__init__(f"{self.path}: field '{field}': {problem}")


class ConfigError(UserError):
    """A configuration file has an unknown key, a wrong type or an invalid value."""

    def __init__(self, path, key: str, problem: str):
        self.path = str(path)
        self.key = key
        self.problem = problem
        super().__init__(f"{self.path}: key '{key}': {problem}")


class ArithmeticOverflow(UserError):
    """A value does not fit the declared hardware width (the golden model never wraps silently)."""


class LayerFitError(UserError, ValueError):
    """A layer does not fit the accelerator as built (sim/params.ChipParams): M, N or K above the
    build's limits, or more values in one A or B tile than its tile memory holds. The message is one
    line naming the layer, the dimension and the limit (the host, hw.host.dram_image, and the
    cycle-level model, sim.loas.simulate_layer, refuse with the same :func:`sim.memory.check_fit`)."""
