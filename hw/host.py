"""Host side of the core, shared by every testbench (Amaranth simulator, cocotb) and `loas rtl sim`:
memory images from a layer, and reassembly + checking of the output beats against the golden model."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.fibers import spike_fibers, weight_fibers
from sim.golden import LIFParams, run_layer

from hw.tppe import DEFAULT_LOOKAHEAD, DEFAULT_RESULT_SLOTS
from hw.core import DEFAULT_SCHEDULE, LD_A_MASK, LD_A_PTR, LD_A_VAL, LD_B_MASK, LD_B_PTR, LD_B_VAL, LD_BIAS


# Capacities of the shared build: one Verilator build serves every layer up to this size.
# Kept modest: Amaranth writes every memory word's initial value into the Verilog, so capacity costs
# generation and build time; larger layers grow the capacities to the next power of two.
CAPACITY = dict(rows=256, cols=128, k=1152, a_nnz=1 << 16, b_nnz=1 << 14, bias_bits=24)


def _round_up_pow2(v: int) -> int:
    return 1 << max(0, int(v - 1).bit_length())


def core_params(words, weights, *, pes=16, chunk_bits=128, laggy_adders=16, fifo_depth=8, T=4,
                bias=None, exact=False, seg_cache=True, lookahead=None, schedule=None,
                result_slots=None, row_prefetch=True) -> dict:
    """Core constructor parameters that fit this layer.

    By default the capacities of :data:`CAPACITY` (grown to powers of two when the layer is larger),
    so that all layers of a workload share one build; ``exact=True`` sizes the memories to the layer
    (small, fast builds for tests). ``lookahead`` / ``schedule`` / ``result_slots`` None = the hw defaults;
    ``row_prefetch`` = the TPPE's walk unit for the next row (Core ``row_prefetch``).
    """
    M, K = words.shape
    N = weights.shape[1]
    bias_abs = int(np.abs(np.asarray(bias, dtype=np.int64)).max(initial=0)) if bias is not None else 0
    need = dict(rows=M, cols=N, k=K, a_nnz=max(1, int((words != 0).sum())),
                b_nnz=max(1, int((weights != 0).sum())), bias_bits=max(16, bias_abs.bit_length() + 1))
    if exact:
        cap = need
    else:
        cap = {key: max(CAPACITY[key], _round_up_pow2(v) if key != "bias_bits" else v) for key, v in need.items()}
    return dict(pes=pes, timesteps=T, chunk_bits=chunk_bits, weight_bits=8, laggy_adders=laggy_adders,
                fifo_depth=fifo_depth, seg_cache=seg_cache, row_prefetch=row_prefetch,
                lookahead=DEFAULT_LOOKAHEAD if lookahead is None else lookahead,
                schedule=DEFAULT_SCHEDULE if schedule is None else schedule,
                result_slots=DEFAULT_RESULT_SLOTS if result_slots is None else result_slots, **cap)


def load_image(words, weights, bias, chunk_bits: int) -> list[tuple[int, int, int]]:
    """(ld_sel, ld_addr, ld_data) writes that load a layer into the core's memories."""
    fa = spike_fibers(np.asarray(words, dtype=np.uint16), chunk_bits)
    fb = weight_fibers(np.asarray(weights, dtype=np.int8), chunk_bits)
    out = []
    for sel, f in ((LD_A_MASK, fa), (LD_B_MASK, fb)):
        C = f.n_chunks
        for r in range(f.rows):
            for c, v in enumerate(f.chunk_ints(r)):
                if v:  # memories start at zero: all-zero chunks need no write
                    out.append((sel, r * C + c, v))
    out += [(LD_A_VAL, i, int(v)) for i, v in enumerate(fa.values)]
    out += [(LD_B_VAL, i, int(v) & 0xFF) for i, v in enumerate(fb.values)]
    out += [(LD_A_PTR, i, int(v)) for i, v in enumerate(fa.ptr)]
    out += [(LD_B_PTR, i, int(v)) for i, v in enumerate(fb.ptr)]
    out += [(LD_BIAS, i, int(v) & 0xFFFF_FFFF) for i, v in enumerate(np.asarray(bias, dtype=np.int64))]
    return out


class Collector:
    """Reassembles output beats into output words and per-row output fibers."""

    def __init__(self, M: int, N: int, P: int):
        self.M, self.N, self.P = M, N, P
        self.words = np.zeros((M, N), dtype=np.uint16)
        self.seen = np.zeros((M, N), dtype=bool)
        self.mask = np.zeros((M, N), dtype=bool)
        self.packed: list[dict[int, int]] = [dict() for _ in range(M)]
        self.errors: list[str] = []

    def beat(self, lanes):
        """One output beat: per lane (valid, row, n, word, nz, index); lanes without valid are ignored."""
        for i, (valid, r, n, word, nz, index) in enumerate(lanes):
            if not valid:
                continue
            if r >= self.M or n >= self.N:
                self.errors.append(f"lane {i} emitted ({r}, {n}) outside the {self.M} x {self.N} layer")
                continue
            if self.seen[r, n]:
                self.errors.append(f"output ({r}, {n}) emitted twice")
            self.seen[r, n] = True
            self.words[r, n] = word
            self.mask[r, n] = bool(nz)
            if nz:
                self.packed[r][index] = word


@dataclass
class Check:
    match: bool
    outputs_checked: int
    mismatches: list[str]


def check(col: Collector, words, weights, bias, lif: LIFParams, T: int, n_mask: int,
          max_report: int = 10) -> Check:
    """Compare every output word and every output fiber (bitmask, packed values) with the golden model."""
    gold = run_layer(words, weights, bias, lif, T, n_mask=n_mask)
    bad = list(col.errors)
    missing = np.argwhere(~col.seen)
    for r, n in missing[:max_report]:
        bad.append(f"output ({r}, {n}) never emitted")
    diff = np.argwhere(col.words != gold.out_words)
    for r, n in diff[:max_report]:
        bad.append(f"word ({r}, {n}): rtl {int(col.words[r, n]):#x} golden {int(gold.out_words[r, n]):#x}")
    fib = gold.out_fiber
    for r in range(col.M):
        gmask = fib.mask[r, : col.N]
        gvals = fib.fiber_values(r)
        rvals = [col.packed[r][i] for i in sorted(col.packed[r])]
        if not np.array_equal(gmask, col.mask[r]) or sorted(col.packed[r]) != list(range(len(rvals))) \
                or [int(v) for v in gvals] != rvals:
            bad.append(f"output fiber of row {r} differs (bitmask or packed words)")
            if len(bad) > 3 * max_report:
                break
    return Check(match=not bad, outputs_checked=int(col.M * col.N), mismatches=bad[:max_report])
