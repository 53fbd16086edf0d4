"""Inner join of one chunk pair (spec/loas.md section 4.1-4.2): AND of the A and B bitmask chunks,
the lowest not-yet-consumed match, its B-side offset from the fast prefix-sum, and the chunks'
popcounts (which advance the value pointers to the next chunk). Combinational (latency 0): the TPPE
consumes one match per cycle."""

from __future__ import annotations

from amaranth import Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.params import validated, check_pow2
from hw.prefix import FastPrefixSum, SimCells, popcount


class InnerJoin(wiring.Component):
    """One match per cycle out of a chunk pair.

    Parameters
    ----------
    chunk_bits : int   bitmask chunk width (power of two)

    Ports
    -----
    a_mask, b_mask : In(chunk_bits)   the A (spike) and B (weight) bitmask chunks
    consumed : In(chunk_bits)         matches already taken from this chunk pair
    has_match : Out(1)                a match remains
    pos : Out(log2 chunk_bits)        position of the lowest remaining match
    onehot : Out(chunk_bits)          its one-hot mask
    last : Out(1)                     it is the last match of the chunk pair
    b_offset : Out                    B value offset of pos within the chunk (fast prefix-sum)
    b_total, a_total : Out            popcounts of the B and A chunks (fast; A uses a popcount
                                      tree, not a prefix-sum: hw/README.md)

    Raises
    ------
    TypeError, ValueError when chunk_bits is not a power-of-two int.
    """

    @validated
    def __init__(self, *, chunk_bits: int = 128):
        self.chunk_bits = check_pow2("chunk_bits", chunk_bits)
        ow = chunk_bits.bit_length()
        pw = max(1, (chunk_bits - 1).bit_length())
        super().__init__({
            "a_mask": In(chunk_bits),
            "b_mask": In(chunk_bits),
            "consumed": In(chunk_bits),
            "has_match": Out(1),
            "pos": Out(pw),
            "onehot": Out(chunk_bits),
            "last": Out(1),
            "b_offset": Out(ow),
            "b_total": Out(ow),
            "a_total": Out(ow),
        })

    def elaborate(self, platform):
        m = Module()
        W = self.chunk_bits
        rem = Signal(W)
        m.d.comb += rem.eq(self.a_mask & self.b_mask & ~self.consumed)
        onehot = Signal(W)
        m.d.comb += onehot.eq(rem & (~rem + 1))  # isolate the lowest set bit
        # One-hot to binary: OR of the indices (no priority chain needed).
        for b in range(len(self.pos)):
            m.d.comb += self.pos[b].eq(
                (onehot & sum(1 << i for i in range(W) if (i >> b) & 1)).any())
        if isinstance(platform, SimCells):
            # The B offset is the fast prefix-sum's entry at pos: in simulation, the popcount of
            # the B bits below pos, one cell instead of 128 offsets and a 128-way mux.
            below = Signal(W)
            m.d.comb += below.eq(self.b_mask & ((Const(1, W + 1) << self.pos) - 1)[:W])
            m.d.comb += [self.b_offset.eq(popcount(below, m, platform)),
                         self.b_total.eq(popcount(self.b_mask, m, platform))]
        else:
            m.submodules.fast = fast = FastPrefixSum(width=W)
            m.d.comb += [fast.mask.eq(self.b_mask), self.b_offset.eq(fast.offset[self.pos]),
                         self.b_total.eq(fast.total)]
        m.d.comb += [
            self.has_match.eq(rem.any()),
            self.onehot.eq(onehot),
            self.last.eq(~(rem & ~onehot).any()),
            self.a_total.eq(popcount(self.a_mask, m, platform)),
        ]
        return m
