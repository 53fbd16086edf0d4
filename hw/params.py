"""Widths and memory depths the hw/ blocks derive from the core's parameters (sim/params.py:
:class:`~sim.params.CoreParams`, :class:`~sim.params.Capacity`, where defaults and ranges live)."""

from __future__ import annotations

from dataclasses import dataclass

from sim.params import (Capacity, CoreParams, acc_bits_for, check_adders, check_bool, check_int,  # noqa: F401
                        check_pow2, check_timesteps)


def bits(n: int) -> int:
    """Unsigned width holding 0..n (at least 1)."""
    return max(1, int(n).bit_length())


def signed_width(abs_max: int) -> int:
    """Signed width holding -abs_max..abs_max."""
    return int(abs_max).bit_length() + 1


def addr_width(depth: int) -> int:
    """Address width of a memory of ``depth`` words (amaranth.lib.memory's ceil_log2)."""
    return max(0, (int(depth) - 1).bit_length())


@dataclass(frozen=True)
class Widths:
    """Everything the RTL sizes from (params, capacity).

    chunks       C, chunks of the largest fiber
    acc_bits     accumulator width (``params.acc_bits`` or the overflow-free one); ``safe`` when no
                 sum can wrap (no overflow logic)
    mem_bits     P-LIF membrane width (acc_bits + 1: |U| <= |X| / 2 for a shift >= 1)
    mask_addr_bits, a_ptr_bits, b_ptr_bits   TPPE address/pointer arithmetic widths
    depth        memory name -> depth (``mem_depths``)
    """

    chunks: int
    acc_bits: int
    safe: bool
    mem_bits: int
    mask_addr_bits: int
    a_ptr_bits: int
    b_ptr_bits: int
    index_bits: int
    depth: dict

    @classmethod
    def of(cls, p: CoreParams, cap: Capacity) -> "Widths":
        W = p.chunk_bits
        C = p.chunks(cap.k)
        safe_acc = acc_bits_for(chunks=C, chunk_bits=W, weight_bits=p.weight_bits, bias_bits=cap.bias_bits)
        acc = safe_acc if p.acc_bits is None else p.acc_bits
        # Mask memories padded by lookahead - 1 chunks: the F side's window may reach past the last
        # fiber (those chunks are masked off in the TPPE).
        depth = {"a_mask": cap.rows * C + p.lookahead - 1, "a_val": cap.a_nnz, "a_ptr": cap.rows + 1,
                 "b_mask": cap.cols * C + p.lookahead - 1, "b_val": cap.b_nnz, "b_ptr": cap.cols + 1,
                 "bias": cap.cols}
        return cls(chunks=C, acc_bits=acc, safe=acc >= safe_acc, mem_bits=acc + 1,
                   mask_addr_bits=bits(max(cap.rows, cap.cols) * C), a_ptr_bits=bits(cap.a_nnz + W),
                   b_ptr_bits=bits(cap.b_nnz + W), index_bits=bits(cap.cols), depth=depth)


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
