"""Prefix sums over a bitmask chunk: the fast (B-side) parallel-prefix tree and the laggy (A-side)
segment-serial unit (spec/loas.md section 4.2; hw/README.md "Inner join")."""

from __future__ import annotations

from amaranth import Const, Instance, Module, Signal, unsigned
from amaranth.lib import wiring, data
from amaranth.lib.wiring import In, Out

from hw.params import validated, check_adders, check_pow2


class SimCells:
    """The platform object of a cosimulation build (``hw.cosim.to_verilog(..., sim_cells=True)``):
    every popcount becomes an instance of the behavioural cell ``loas_popcount``
    (:data:`SIM_CELLS_VERILOG`, ``$countones``), and the inner join's B offset the popcount of the
    B bits below the match instead of the 128-entry fast prefix-sum and its mux. Same function,
    a fraction of the simulation cost: Verilator evaluates every adder of a tree every cycle, and
    the 16 TPPEs' trees were most of the accelerator's evaluation and of its build (hw/README.md
    "Simulation cells"). Synthesis, ``make verilog`` and the Amaranth simulator (platform None)
    keep the adder trees; tests/test_hw_cells.py holds the two forms equal."""

    def __repr__(self):
        return "SimCells()"


SIM_CELLS = SimCells()

#: The behavioural cells of a cosimulation build, appended to its Verilog (Verilator and Icarus
#: both know ``$countones``).
SIM_CELLS_VERILOG = """\
module loas_popcount #(parameter WIDTH = 1, parameter OW = 1) (
  input  wire [WIDTH-1:0] bits,
  output wire [OW-1:0]    count
);
  assign count = $countones(bits);
endmodule
"""


def popcount(bits, m=None, platform=None):
    """Popcount of a Value (combinational, ``log2(len) + 1`` bits): an adder tree, or, when
    ``platform`` is :data:`SIM_CELLS` (and the module ``m`` is given), a ``loas_popcount`` cell."""
    if isinstance(platform, SimCells):
        if m is None:
            raise ValueError("popcount: a simulation cell needs the module (m) to instantiate it in")
        n = len(bits)
        count = Signal(max(1, n.bit_length()), name="popcount")
        m.submodules += Instance("loas_popcount", p_WIDTH=max(1, n), p_OW=len(count),
                                 i_bits=bits if n else Const(0, 1), o_count=count)
        return count
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
    """One step of the A-side laggy prefix-sum: the ``adders`` adders over one segment of a chunk
    (combinational, latency 0). Walking a chunk takes one step per segment (chunk_bits / adders
    cycles): the TPPE's L side and walk unit keep the walk's state (which segment's base is known)
    and call this block once per cycle.

    ``next`` = ``base`` + popcount(segment ``seg`` of ``mask``): the base of segment seg + 1;
    ``offset`` = ``base`` + popcount(segment bits below in-segment position ``pos``): the A offset of
    a match in segment seg, when ``base`` is that segment's base.

    Parameters
    ----------
    chunk_bits : int   chunk width (power of two)
    adders : int       segment width (power of two, <= chunk_bits)
    ptr_bits : int     width of base / offset / next

    Ports
    -----
    mask : In(chunk_bits)          the A bitmask chunk
    seg : In(range(segments))      segment index
    pos : In(log2 adders)          position within the segment
    base : In(ptr_bits)            ones of the chunk below segment ``seg`` (plus any offset)
    offset, next : Out(ptr_bits)

    Raises
    ------
    TypeError, ValueError on bad parameters.
    """

    @validated
    def __init__(self, *, chunk_bits: int = 128, adders: int = 16, ptr_bits: int = 8):
        self.chunk_bits = check_pow2("chunk_bits", chunk_bits)
        self.adders = check_adders(chunk_bits, adders)
        self.ptr_bits = ptr_bits
        super().__init__({
            "mask": In(chunk_bits),
            "seg": In(range(max(2, chunk_bits // adders))),
            "pos": In(max(1, (adders - 1).bit_length())),
            "base": In(ptr_bits),
            "offset": Out(ptr_bits),
            "next": Out(ptr_bits),
        })

    def elaborate(self, platform):
        m = Module()
        A = self.adders
        segbits = Signal(A)
        below = Signal(A)
        lb = (A - 1).bit_length()
        in_seg = self.pos[:lb] if lb else Const(0, 1)
        m.d.comb += [
            segbits.eq(self.mask.word_select(self.seg, A) if A < self.chunk_bits else self.mask),
            # segment bits strictly below pos: the adders' within-segment prefix
            below.eq(segbits & ((Const(1, A + 1) << in_seg) - 1)[:A]),
            self.offset.eq(self.base + popcount(below, m, platform)),
            self.next.eq(self.base + popcount(segbits, m, platform)),
        ]
        return m
