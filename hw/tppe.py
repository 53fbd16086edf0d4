"""TPPE: temporal-parallel processing element (spec/loas.md section 4; hw/README.md "TPPE").

One TPPE computes one output neuron (m, n) for all T timesteps. The F side walks the chunk pairs
of A[m, :] and B[:, n] and adds each matched weight into the pseudo-accumulator at one match per
cycle, pushing (position, chunk, A base) into FIFO-mp and the weight into FIFO-B; the L side pops
them as the laggy A-side prefix-sum reaches their position, fetches the real spike word and adds the
weight into the correction accumulator of every timestep whose bit is 0. The result
O[t] = pseudo - correction[t] is valid once both sides are done. Cycle contract: sim/tppe.py.
"""

from __future__ import annotations

from amaranth import Module, Signal, signed, unsigned
from amaranth.lib import wiring, data, stream
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from hw.join import InnerJoin
from hw.params import validated, check_adders, check_int, check_pow2, check_timesteps, signed_width
from hw.prefix import LaggyPrefixSum


def acc_bits_for(*, chunks: int, chunk_bits: int, weight_bits: int, bias_bits: int) -> int:
    """Accumulator width for which no fiber of chunks*chunk_bits positions can overflow."""
    return signed_width((1 << (bias_bits - 1)) + chunks * chunk_bits * (1 << (weight_bits - 1)))


class TPPE(wiring.Component):
    """Temporal-parallel processing element with speculative pseudo-accumulation.

    Parameters (keyword-only)
    ----------
    timesteps : int      T, 1..16
    chunk_bits : int     bitmask chunk width, power of two
    chunks : int         largest number of chunks per fiber (ceil(K / chunk_bits)) the widths are
                         sized for; the ``chunks`` input gives the layer's value at run time
    weight_bits : int    signed weight width, 2..16
    bias_bits : int      signed bias width
    laggy_adders : int   adders of the A-side laggy prefix-sum (power of two <= chunk_bits)
    fifo_depth : int     depth of FIFO-mp and FIFO-B, >= 1
    mask_addr_bits, a_ptr_bits, b_ptr_bits : int   memory address widths
    acc_bits : int or None   accumulator width; None derives the overflow-free width; a smaller
                             explicit width sets ``overflow`` (sticky per job) when a sum wraps

    Ports
    -----
    job : In(stream)     payload ``a_row`` (mask address of A chunk 0), ``a_ptr`` (A value address
                         of the fiber), ``b_col``, ``b_ptr``, ``bias``; accepted when idle or when
                         the result is taken in the same cycle
    result : Out(stream) payload ``o``: T signed accumulators O[t]; ``overflow`` flag
    chunks : In          chunks per fiber of the running layer (1..chunks parameter)
    a_mask_addr/a_mask_data, al_mask_addr/al_mask_data, a_val_addr/a_val_data,
    b_mask_addr/b_mask_data, b_val_addr/b_val_data: combinational-read memory ports (F side A and
                         B masks, L side A mask, L side spike words, F side weights)

    Raises
    ------
    TypeError, ValueError naming the parameter: T outside 1..16, chunk not a power of two, FIFO
    depth 0, bad widths.
    """

    @validated
    def __init__(self, *, timesteps=4, chunk_bits=128, chunks=1, weight_bits=8, bias_bits=16,
                 laggy_adders=16, fifo_depth=8, mask_addr_bits=16, a_ptr_bits=20, b_ptr_bits=20,
                 acc_bits=None):
        self.T = check_timesteps(timesteps)
        self.chunk_bits = check_pow2("chunk_bits", chunk_bits)
        self.max_chunks = check_int("chunks", chunks, lo=1)
        self.weight_bits = check_int("weight_bits", weight_bits, lo=2, hi=16)
        self.bias_bits = check_int("bias_bits", bias_bits, lo=1, hi=32)
        self.laggy_adders = check_adders(chunk_bits, laggy_adders)
        self.fifo_depth = check_int("fifo_depth", fifo_depth, lo=1)
        for name, v in (("mask_addr_bits", mask_addr_bits), ("a_ptr_bits", a_ptr_bits), ("b_ptr_bits", b_ptr_bits)):
            check_int(name, v, lo=1, hi=40)
        self.mask_addr_bits, self.a_ptr_bits, self.b_ptr_bits = mask_addr_bits, a_ptr_bits, b_ptr_bits
        safe = acc_bits_for(chunks=self.max_chunks, chunk_bits=chunk_bits, weight_bits=weight_bits, bias_bits=bias_bits)
        self.acc_bits = safe if acc_bits is None else check_int("acc_bits", acc_bits, lo=weight_bits + 1, hi=64)
        self.safe = self.acc_bits >= safe
        self.job_layout = data.StructLayout({
            "a_row": unsigned(mask_addr_bits), "a_ptr": unsigned(a_ptr_bits),
            "b_col": unsigned(mask_addr_bits), "b_ptr": unsigned(b_ptr_bits),
            "bias": signed(bias_bits),
        })
        self.result_layout = data.StructLayout({
            "o": data.ArrayLayout(signed(self.acc_bits), self.T), "overflow": unsigned(1),
        })
        W = chunk_bits
        super().__init__({
            "job": In(stream.Signature(self.job_layout)),
            "result": Out(stream.Signature(self.result_layout)),
            "a_mask_addr": Out(mask_addr_bits), "a_mask_data": In(W),
            "al_mask_addr": Out(mask_addr_bits), "al_mask_data": In(W),
            "a_val_addr": Out(a_ptr_bits), "a_val_data": In(self.T),
            "b_mask_addr": Out(mask_addr_bits), "b_mask_data": In(W),
            "b_val_addr": Out(b_ptr_bits), "b_val_data": In(signed(weight_bits)),
            "chunks": In(range(1, chunks + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        W, T, D = self.chunk_bits, self.T, self.fifo_depth
        C = self.chunks  # the run-time input; ``self.chunks`` was shadowed by the port
        acc = self.acc_bits
        pw = max(1, (W - 1).bit_length())
        cw = max(1, len(C))
        m.submodules.join = join = InnerJoin(chunk_bits=W)
        m.submodules.laggy = laggy = LaggyPrefixSum(chunk_bits=W, adders=self.laggy_adders,
                                                    ptr_bits=self.a_ptr_bits)
        mp_layout = data.StructLayout({"pos": unsigned(pw), "chunk": unsigned(cw), "a_base": unsigned(self.a_ptr_bits)})
        m.submodules.fifo_mp = fifo_mp = SyncFIFO(width=mp_layout.size, depth=D)
        m.submodules.fifo_b = fifo_b = SyncFIFO(width=self.weight_bits, depth=D)

        a_row = Signal(self.mask_addr_bits)
        b_col = Signal(self.mask_addr_bits)
        chunk = Signal(cw)
        consumed = Signal(W)
        a_ptr = Signal(self.a_ptr_bits)
        b_ptr = Signal(self.b_ptr_bits)
        pseudo = Signal(signed(acc))
        corr = Signal(data.ArrayLayout(signed(acc), T))
        overflow = Signal()
        l_valid = Signal()
        l_chunk = Signal(cw)

        # ---- F side: fast join + pseudo-accumulator (one match or one empty chunk per cycle) ----
        m.d.comb += [
            self.a_mask_addr.eq(a_row + chunk),
            self.b_mask_addr.eq(b_col + chunk),
            join.a_mask.eq(self.a_mask_data),
            join.b_mask.eq(self.b_mask_data),
            join.consumed.eq(consumed),
            self.b_val_addr.eq(b_ptr + join.b_offset),
        ]
        mp_in = data.View(mp_layout, fifo_mp.w_data)
        m.d.comb += [
            mp_in.pos.eq(join.pos), mp_in.chunk.eq(chunk), mp_in.a_base.eq(a_ptr),
            fifo_b.w_data.eq(self.b_val_data),
        ]
        push = Signal()
        advance = Signal()
        start = Signal()
        m.d.comb += start.eq(self.job.valid & self.job.ready)

        # ---- L side: laggy prefix-sum walk + correction accumulators ----
        head = data.View(mp_layout, fifo_mp.r_data)
        restart = Signal()
        m.d.comb += [
            restart.eq(~l_valid | (l_chunk != head.chunk)),
            self.al_mask_addr.eq(a_row + head.chunk),
            laggy.mask.eq(self.al_mask_data),
            laggy.pos.eq(head.pos),
            laggy.base.eq(head.a_base),
            laggy.restart.eq(restart),
            laggy.en.eq(fifo_mp.r_rdy),
            self.a_val_addr.eq(laggy.offset),
        ]
        pop = Signal()
        m.d.comb += [pop.eq(fifo_mp.r_rdy & laggy.hit), fifo_mp.r_en.eq(pop), fifo_b.r_en.eq(pop)]
        w_head = Signal(signed(self.weight_bits))
        m.d.comb += w_head.eq(fifo_b.r_data)
        with m.If(fifo_mp.r_rdy):
            m.d.sync += [l_valid.eq(1), l_chunk.eq(head.chunk)]
        with m.If(pop):
            for t in range(T):
                with m.If(~self.a_val_data[t]):
                    s = corr[t] + w_head
                    m.d.sync += corr[t].eq(s)
                    if not self.safe:
                        with m.If(s[acc] != s[acc - 1]):  # sign bits differ: the sum wrapped
                            m.d.sync += overflow.eq(1)

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.job.ready.eq(1)
                with m.If(start):
                    m.next = "RUN"
            with m.State("RUN"):
                with m.If(join.has_match):
                    m.d.comb += [push.eq(fifo_mp.w_rdy), advance.eq(fifo_mp.w_rdy & join.last)]
                with m.Else():
                    m.d.comb += advance.eq(1)
                with m.If(advance & (chunk == C - 1)):
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                # Both FIFOs empty and the last correction registered: the result is exact.
                with m.If(fifo_mp.level == 0):
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += [self.result.valid.eq(1), self.job.ready.eq(self.result.ready)]
                with m.If(self.result.ready):
                    with m.If(start):
                        m.next = "RUN"
                    with m.Else():
                        m.next = "IDLE"

        m.d.comb += [fifo_mp.w_en.eq(push), fifo_b.w_en.eq(push)]
        with m.If(push):
            s = pseudo + self.b_val_data
            m.d.sync += [pseudo.eq(s), consumed.eq(consumed | join.onehot)]
            if not self.safe:
                with m.If(s[acc] != s[acc - 1]):
                    m.d.sync += overflow.eq(1)
        with m.If(advance):
            m.d.sync += [
                chunk.eq(chunk + 1), consumed.eq(0),
                a_ptr.eq(a_ptr + join.a_total), b_ptr.eq(b_ptr + join.b_total),
            ]
        with m.If(start):
            # The bias is the pseudo-accumulator's initial value: added once per timestep for free.
            m.d.sync += [
                a_row.eq(self.job.payload.a_row), b_col.eq(self.job.payload.b_col),
                a_ptr.eq(self.job.payload.a_ptr), b_ptr.eq(self.job.payload.b_ptr),
                pseudo.eq(self.job.payload.bias), chunk.eq(0), consumed.eq(0),
                l_valid.eq(0), overflow.eq(0),
            ]
            for t in range(T):
                m.d.sync += corr[t].eq(0)
        for t in range(T):
            m.d.comb += self.result.payload.o[t].eq(pseudo - corr[t])
        m.d.comb += self.result.payload.overflow.eq(overflow)
        return m
