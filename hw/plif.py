"""P-LIF: the LIF chain over T unrolled in one combinational unit (spec/loas.md section 5), with
exactly the golden model's arithmetic (sim.golden.plif): X = O[t] + U; fire when X >= threshold;
U = 0 on a spike (hard reset), else X >> decay_shift (arithmetic shift = floor)."""

from __future__ import annotations

from amaranth import Module, Signal, signed, unsigned
from amaranth.lib import wiring, data, stream
from amaranth.lib.wiring import In, Out

from hw.params import validated, check_int, check_timesteps


class PLIF(wiring.Component):
    """All T output spikes of a neuron at once; a pure stream stage of latency 0.

    Parameters (keyword-only)
    ----------
    timesteps : int   T, 1..16
    acc_bits : int    signed width of O[t]
    mem_bits : int or None   membrane width; None = acc_bits + 1, which cannot overflow
                             (|U| <= |X| / 2 for decay_shift >= 1: see sim.golden.safe_widths)

    Ports
    -----
    i : In(stream of ArrayLayout(signed(acc_bits), T))    O[0..T-1]
    o : Out(stream of unsigned(T))                         spike word, bit t = timestep t
    threshold : In(signed(mem_bits))                       >= 1
    decay_shift : In(unsigned(5))                          0..16

    Raises
    ------
    TypeError, ValueError naming a bad parameter (T outside 1..16, widths < 2).
    """

    @validated
    def __init__(self, *, timesteps=4, acc_bits=24, mem_bits=None):
        self.T = check_timesteps(timesteps)
        self.acc_bits = check_int("acc_bits", acc_bits, lo=2, hi=64)
        self.mem_bits = acc_bits + 1 if mem_bits is None else check_int("mem_bits", mem_bits, lo=acc_bits + 1, hi=65)
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(signed(acc_bits), self.T))),
            "o": Out(stream.Signature(unsigned(self.T))),
            "threshold": In(signed(self.mem_bits)),
            "decay_shift": In(unsigned(5)),
        })

    def elaborate(self, platform):
        m = Module()
        u = Signal(signed(self.mem_bits), name="u_init")
        bits = []
        for t in range(self.T):
            x = Signal(signed(self.mem_bits), name=f"x{t}")
            m.d.comb += x.eq(self.i.payload[t] + u)
            fire = Signal(name=f"fire{t}")
            m.d.comb += fire.eq(x >= self.threshold)
            nu = Signal(signed(self.mem_bits), name=f"u{t}")
            m.d.comb += nu.eq(0)
            with m.If(~fire):
                m.d.comb += nu.eq(x >> self.decay_shift)
            bits.append(fire)
            u = nu
        from amaranth import Cat
        m.d.comb += [
            self.o.payload.eq(Cat(*bits)),
            self.o.valid.eq(self.i.valid),
            self.i.ready.eq(self.o.ready),
        ]
        return m
