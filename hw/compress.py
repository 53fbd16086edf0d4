"""Output compressor: builds the output fiber of one row (bitmask over n + packed non-zero words),
spec/loas.md section 5. In strong mode (n_mask = 1) words with exactly one spike are dropped (become
silent), as sim.golden.strong_mask."""

from __future__ import annotations

from amaranth import Module, Signal, unsigned
from amaranth.lib import wiring, data, stream
from amaranth.lib.wiring import In, Out

from hw.params import validated, check_int, check_timesteps
from hw.prefix import popcount


class OutputCompressor(wiring.Component):
    """Stream stage of latency 0 with a per-row counter of packed words.

    Parameters (keyword-only)
    ----------
    timesteps : int    T, 1..16
    index_bits : int   width of the packed index (log2 of the longest row + 1)

    Ports
    -----
    i : In(stream)   payload ``word`` (T bits), ``first`` (first column of a row: restart count)
    o : Out(stream)  payload ``word`` (after the strong mask), ``nz`` (bitmask bit), ``index``
                     (position of the word in the row's packed array; meaningful when nz)
    n_mask : In(1)   1 = strong mode

    Raises
    ------
    TypeError, ValueError naming a bad parameter.
    """

    @validated
    def __init__(self, *, timesteps=4, index_bits=16):
        self.T = check_timesteps(timesteps)
        self.index_bits = check_int("index_bits", index_bits, lo=1, hi=32)
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({"word": unsigned(self.T), "first": unsigned(1)}))),
            "o": Out(stream.Signature(data.StructLayout({
                "word": unsigned(self.T), "nz": unsigned(1), "index": unsigned(index_bits)}))),
            "n_mask": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        count = Signal(self.index_bits)
        word = Signal(self.T)
        one = Signal()
        m.d.comb += [
            one.eq(popcount(self.i.payload.word, m, platform) == 1),
            word.eq(self.i.payload.word),
        ]
        with m.If(self.n_mask & one):
            m.d.comb += word.eq(0)
        base = Signal(self.index_bits)
        m.d.comb += base.eq(count)
        with m.If(self.i.payload.first):
            m.d.comb += base.eq(0)
        m.d.comb += [
            self.o.valid.eq(self.i.valid),
            self.i.ready.eq(self.o.ready),
            self.o.payload.word.eq(word),
            self.o.payload.nz.eq(word.any()),
            self.o.payload.index.eq(base),
        ]
        with m.If(self.i.valid & self.o.ready):
            m.d.sync += count.eq(base + word.any())
        return m
