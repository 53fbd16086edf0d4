"""Prefix sums over a bitmask chunk: the fast (B-side) parallel-prefix tree and the laggy (A-side)
segment-serial unit (spec/loas.md section 4.2; hw/README.md "Inner join")."""

from __future__ import annotations

from amaranth import Const, Module, Signal, unsigned
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from hw.params import validated, check_adders, check_pow2


def popcount(bits):
    """Adder-tree popcount of a Value (combinational)."""
    vals = [bits[i] for i in range(len(bits))]
    if not vals:
        return Signal(1)
    while len(vals) > 1:
        nxt = [vals[i] + vals[i + 1] for i in range(0, len(vals) - 1, 2)]
        if len(vals) % 2:
            nxt.append(vals[-1])
        vals = nxt
    return vals[0]


class FastPrefixSum(wiring.Component):
    """Exclusive prefix popcount of a whole chunk in one combinational pass (Kogge-Stone tree,
    log2(width) levels of width adders): ``offset[i] = popcount(mask[0:i])``. Latency 0.

    Parameters
    ----------
    width : int     chunk width in bits (power of two)

    Ports
    -----
    mask : In(width)
    offset : Out(ArrayLayout(unsigned(log2(width) + 1), width))
    total : Out(unsigned(log2(width) + 1))   popcount of the whole mask

    Raises
    ------
    TypeError, ValueError   when width is not a power-of-two int.
    """

    @validated
    def __init__(self, *, width: int = 128):
        self.width = check_pow2("chunk_bits", width)
        ow = width.bit_length()
        super().__init__({
            "mask": In(width),
            "offset": Out(data.ArrayLayout(unsigned(ow), width)),
            "total": Out(unsigned(ow)),
        })

    def elaborate(self, platform):
        m = Module()
        W = self.width
        ow = W.bit_length()
        level = [self.mask[i] for i in range(W)]
        d = 1
        while d < W:
            nxt = []
            for i in range(W):
                if i >= d:
                    s = Signal(unsigned(ow), name=f"ks{d}_{i}")
                    m.d.comb += s.eq(level[i] + level[i - d])
                    nxt.append(s)
                else:
                    nxt.append(level[i])
            level = nxt
            d *= 2
        for i in range(W):
            m.d.comb += self.offset[i].eq(0 if i == 0 else level[i - 1])
        m.d.comb += self.total.eq(level[W - 1])
        return m


class LaggyPrefixSum(wiring.Component):
    """A-side prefix-sum with ``adders`` adders: walks the chunk one segment of ``adders`` bits
    per cycle (chunk_bits / adders cycles for a whole chunk) and resolves positions of the segment
    it stands on.

    Each cycle with ``en``: if ``restart`` the walk starts over at segment 0 with count ``base``.
    If the target position ``pos`` lies in the current segment, ``hit`` is 1 and ``offset`` =
    count + popcount(mask bits of the segment below pos) (combinational); otherwise, with ``en``,
    the walk advances one segment (count += popcount(segment)) at the next clock edge.

    Parameters
    ----------
    chunk_bits : int   chunk width (power of two)
    adders : int       segment width = adders (power of two, <= chunk_bits)
    ptr_bits : int     width of base/offset (value-array addresses)

    Ports
    -----
    mask : In(chunk_bits)   A bitmask chunk being walked
    pos : In(log2 chunk_bits)
    base : In(ptr_bits)     value-array address of the chunk's first non-zero
    restart, en : In(1)
    hit : Out(1)
    offset : Out(ptr_bits)

    Raises
    ------
    TypeError, ValueError on bad parameters.
    """

    @validated
    def __init__(self, *, chunk_bits: int = 128, adders: int = 16, ptr_bits: int = 20):
        self.chunk_bits = check_pow2("chunk_bits", chunk_bits)
        self.adders = check_adders(chunk_bits, adders)
        self.ptr_bits = ptr_bits
        pw = max(1, (chunk_bits - 1).bit_length())
        super().__init__({
            "mask": In(chunk_bits),
            "pos": In(pw),
            "base": In(ptr_bits),
            "restart": In(1),
            "en": In(1),
            "hit": Out(1),
            "offset": Out(ptr_bits),
        })

    def elaborate(self, platform):
        m = Module()
        A = self.adders
        nseg = self.chunk_bits // A
        sw = max(1, (nseg - 1).bit_length())
        seg = Signal(sw)
        cnt = Signal(self.ptr_bits)
        seg_eff = Signal(sw)
        cnt_eff = Signal(self.ptr_bits)
        with m.If(self.restart):
            m.d.comb += [seg_eff.eq(0), cnt_eff.eq(self.base)]
        with m.Else():
            m.d.comb += [seg_eff.eq(seg), cnt_eff.eq(cnt)]
        segbits = Signal(A)
        m.d.comb += segbits.eq(self.mask.word_select(seg_eff, A))
        lb = (A - 1).bit_length()
        pos_seg = self.pos >> lb if lb else self.pos
        in_seg = self.pos[:lb] if lb else 0
        below = Signal(A)
        # Mask of segment bits strictly below pos: the 16 adders' within-segment prefix.
        m.d.comb += below.eq(segbits & ((Const(1, A + 1) << in_seg) - 1)[:A])
        m.d.comb += [
            self.hit.eq(pos_seg == seg_eff),
            self.offset.eq(cnt_eff + popcount(below)),
        ]
        with m.If(self.en):
            with m.If(pos_seg == seg_eff):
                m.d.sync += [seg.eq(seg_eff), cnt.eq(cnt_eff)]
            with m.Else():
                m.d.sync += [seg.eq(seg_eff + 1), cnt.eq(cnt_eff + popcount(segbits))]
        return m
