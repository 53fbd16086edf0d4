"""Parameter validation shared by the hw/ blocks (refused at elaboration with a message naming it)."""

from __future__ import annotations

from sim.fibers import MAX_T


def check_int(name: str, value, *, lo: int = None, hi: int = None) -> int:
    """Return ``value`` if it is an int in [lo, hi]; else raise TypeError/ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if lo is not None and value < lo or hi is not None and value > hi:
        rng = f"{lo if lo is not None else '-inf'}..{hi if hi is not None else 'inf'}"
        raise ValueError(f"{name} must be in {rng}, got {value!r}")
    return value


def check_pow2(name: str, value) -> int:
    check_int(name, value, lo=1)
    if value & (value - 1):
        raise ValueError(f"{name} must be a power of two, got {value!r}")
    return value


def check_timesteps(value) -> int:
    return check_int("timesteps", value, lo=1, hi=MAX_T)


def check_adders(chunk_bits: int, adders) -> int:
    check_pow2("laggy_adders", adders)
    if adders > chunk_bits:
        raise ValueError(f"laggy_adders must divide chunk_bits={chunk_bits}, got {adders!r}")
    return adders


def signed_width(abs_max: int) -> int:
    """Signed width holding -abs_max..abs_max."""
    return int(abs_max).bit_length() + 1


def validated(init):
    """Decorator for component constructors: a refused parameter set raises without Amaranth's
    "created but never used" warning for the half-built object (it was never meant to be used)."""
    import functools

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        try:
            init(self, *args, **kwargs)
        except (TypeError, ValueError):
            self._MustUse__used = True
            raise

    return wrapper
