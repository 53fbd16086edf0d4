"""TPPE: temporal-parallel processing element (spec/loas.md section 4; hw/README.md "TPPE").

One TPPE computes one output neuron (m, n) for all T timesteps. The F side walks the chunk pairs
of A[m, :] and B[:, n] and adds each matched weight into the pseudo-accumulator at one match per
cycle, pushing (position, chunk, A base) into FIFO-mp and the weight into FIFO-B; the L side pops
them as the laggy A-side prefix-sum reaches their position, fetches the real spike word and adds the
weight into the correction accumulator of every timestep whose bit is 0. The result
O[t] = pseudo - correction[t] is valid once both sides are done. Cycle contract: sim/tppe.py.
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring, data, stream
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.join import InnerJoin
from hw.params import validated, check_adders, check_int, check_pow2, check_timesteps, signed_width
from hw.prefix import popcount

#: chunk pairs the F side examines per cycle (hw/README.md "TPPE"); sim/tppe.py uses the same default.
#: 4 takes nearly all of the gain (bench/results/rtl.json: 8 adds < 0.1 % on the synthetic conv layers).
DEFAULT_LOOKAHEAD = 4
#: jobs whose F side has ended and whose result waits for the L side (hw/README.md "TPPE"): the F
#: side runs up to 4 jobs ahead of the corrections (bench/results/rtl.json; sim/tppe.py: same default).
DEFAULT_RESULT_SLOTS = 4


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
    lookahead : int      chunk pairs the F side examines per cycle (1..16, default
                         ``DEFAULT_LOOKAHEAD``): empty chunk pairs among them are skipped in the
                         same cycle (1: one cycle per empty chunk pair, the original behaviour)
    seg_cache : bool     keep the segment bases the laggy walk computed for the resident A row
                         across jobs until a job with ``new_row`` (default True); False forgets
                         them at every job (the walk restarts at segment 0 for every matched chunk)
    row_prefetch : bool  (with ``seg_cache`` and laggy_adders < chunk_bits) a second cache bank and a
                         walk unit that fills it with every segment base of the row given on ``pf``
                         while the current row runs (default True); the next ``new_row`` job then
                         switches banks and its matches never wait for the walk

    Ports
    -----
    job : In(stream)     payload ``a_row`` (mask address of A chunk 0), ``a_ptr`` (A value address
                         of the fiber), ``b_col``, ``b_ptr``, ``bias``, ``new_row`` (1: the A row
                         differs from the previous job's; clears the segment-base cache); accepted
                         when idle or when the result is taken in the same cycle
    result : Out(stream) payload ``o``: T signed accumulators O[t]; ``overflow`` flag
    pf : In(stream)      payload: mask address of A chunk 0 of the next row this TPPE will run;
                         taken when the walk unit is free. A ``new_row`` job after a taken ``pf``
                         must be that row: it is accepted once the walk is done; a ``new_row``
                         job without one starts cold (the L side walks)
    chunks : In          chunks per fiber of the running layer (1..chunks parameter)
    a_mask_addr/a_mask_data, b_mask_addr/b_mask_data: the F side reads ``lookahead`` consecutive
                         chunks (data = chunk addr + i at bits [i*W, (i+1)*W))
    aw_mask_addr/aw_mask_data: the walk unit's A mask read port (the ``pf`` row)
    al_mask_addr/al_mask_data, a_val_addr/a_val_data,
    b_val_addr/b_val_data: combinational-read memory ports (F side A and
                         B masks, L side A mask, L side spike words, F side weights)

    Raises
    ------
    TypeError, ValueError naming the parameter: T outside 1..16, chunk not a power of two, FIFO
    depth 0, bad widths.
    """

    @validated
    def __init__(self, *, timesteps=4, chunk_bits=128, chunks=1, weight_bits=8, bias_bits=16,
                 laggy_adders=16, fifo_depth=8, mask_addr_bits=16, a_ptr_bits=20, b_ptr_bits=20,
                 acc_bits=None, seg_cache=True, lookahead=DEFAULT_LOOKAHEAD,
                 result_slots=DEFAULT_RESULT_SLOTS, tag_bits=1, row_prefetch=True):
        for name, v in (("seg_cache", seg_cache), ("row_prefetch", row_prefetch)):
            if not isinstance(v, bool):
                raise TypeError(f"{name} must be a bool, got {type(v).__name__}")
        self.seg_cache = seg_cache
        self.row_prefetch = row_prefetch
        self.T = check_timesteps(timesteps)
        self.chunk_bits = check_pow2("chunk_bits", chunk_bits)
        self.max_chunks = check_int("chunks", chunks, lo=1)
        self.weight_bits = check_int("weight_bits", weight_bits, lo=2, hi=16)
        self.bias_bits = check_int("bias_bits", bias_bits, lo=1, hi=32)
        self.laggy_adders = check_adders(chunk_bits, laggy_adders)
        self.fifo_depth = check_int("fifo_depth", fifo_depth, lo=1)
        self.lookahead = check_int("lookahead", lookahead, lo=1, hi=16)
        self.result_slots = check_int("result_slots", result_slots, lo=1, hi=8)
        self.tag_bits = check_int("tag_bits", tag_bits, lo=1, hi=64)
        for name, v in (("mask_addr_bits", mask_addr_bits), ("a_ptr_bits", a_ptr_bits), ("b_ptr_bits", b_ptr_bits)):
            check_int(name, v, lo=1, hi=40)
        self.mask_addr_bits, self.a_ptr_bits, self.b_ptr_bits = mask_addr_bits, a_ptr_bits, b_ptr_bits
        safe = acc_bits_for(chunks=self.max_chunks, chunk_bits=chunk_bits, weight_bits=weight_bits, bias_bits=bias_bits)
        self.acc_bits = safe if acc_bits is None else check_int("acc_bits", acc_bits, lo=weight_bits + 1, hi=64)
        self.safe = self.acc_bits >= safe
        self.job_layout = data.StructLayout({
            "a_row": unsigned(mask_addr_bits), "a_ptr": unsigned(a_ptr_bits),
            "b_col": unsigned(mask_addr_bits), "b_ptr": unsigned(b_ptr_bits),
            "bias": signed(bias_bits), "new_row": unsigned(1), "tag": unsigned(tag_bits),
        })
        self.result_layout = data.StructLayout({
            "o": data.ArrayLayout(signed(self.acc_bits), self.T), "overflow": unsigned(1),
            "tag": unsigned(tag_bits),
        })
        W = chunk_bits
        # The walk unit exists only where there is a walk to hide and a cache to fill.
        self.prefetch = row_prefetch and seg_cache and self.laggy_adders < W
        super().__init__({
            "pf": In(stream.Signature(unsigned(mask_addr_bits))),
            "aw_mask_addr": Out(mask_addr_bits), "aw_mask_data": In(W),
            "job": In(stream.Signature(self.job_layout)),
            "result": Out(stream.Signature(self.result_layout)),
            "a_mask_addr": Out(mask_addr_bits), "a_mask_data": In(W * self.lookahead),
            "al_mask_addr": Out(mask_addr_bits), "al_mask_data": In(W),
            "a_val_addr": Out(a_ptr_bits), "a_val_data": In(self.T),
            "b_mask_addr": Out(mask_addr_bits), "b_mask_data": In(W * self.lookahead),
            "b_val_addr": Out(b_ptr_bits), "b_val_data": In(signed(weight_bits)),
            "chunks": In(range(1, chunks + 1)),
            "busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        W, T, D = self.chunk_bits, self.T, self.fifo_depth
        C = self.chunks  # the run-time input; ``self.chunks`` was shadowed by the port
        acc = self.acc_bits
        pw = max(1, (W - 1).bit_length())
        cw = max(1, len(C))
        m.submodules.join = join = InnerJoin(chunk_bits=W)
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
        overflow = Signal()  # F side: the pseudo-accumulator of the running job wrapped
        corr_ovf = Signal()  # L side: a correction accumulator of slot 0's job wrapped
        tag = Signal(self.tag_bits)
        cnt_w = (self.max_chunks * W).bit_length()  # FIFO entries of one job: at most chunks * W
        fcount = Signal(cnt_w)  # FIFO entries pushed by the running job

        push = Signal()
        advance = Signal()
        skip_all = Signal()
        f_last = Signal()  # the F side's last cycle of the running job
        start = Signal()
        m.d.comb += start.eq(self.job.valid & self.job.ready)
        # F side of the job being accepted runs in its accept cycle (cycle 0) on the payload, so the
        # effective registers are muxed with it; the result of the previous job is read in the
        # same cycle from the registers (hw/README.md "TPPE").
        a_row_e = Mux(start, self.job.payload.a_row, a_row)
        b_col_e = Mux(start, self.job.payload.b_col, b_col)
        a_ptr_e = Mux(start, self.job.payload.a_ptr, a_ptr)
        b_ptr_e = Mux(start, self.job.payload.b_ptr, b_ptr)
        chunk_e = Mux(start, 0, chunk)
        consumed_e = Mux(start, 0, consumed)
        tag_e = Mux(start, self.job.payload.tag, tag)
        fcount_e = Mux(start, 0, fcount)
        pseudo_e = Signal(signed(acc))
        m.d.comb += pseudo_e.eq(Mux(start, self.job.payload.bias, pseudo))
        # ---- F side: fast join + pseudo-accumulator (one match per cycle; empty chunk pairs of
        # the ``lookahead`` window are skipped in the same cycle) ----
        L = self.lookahead
        m.d.comb += [self.a_mask_addr.eq(a_row_e + chunk_e), self.b_mask_addr.eq(b_col_e + chunk_e)]
        a_ch = [self.a_mask_data[i * W:(i + 1) * W] for i in range(L)]
        b_ch = [self.b_mask_data[i * W:(i + 1) * W] for i in range(L)]
        any_ = []
        for i in range(L):
            ai = Signal(name=f"la_any{i}")
            rem = a_ch[i] & b_ch[i] & (~consumed_e if i == 0 else Const(-1, W))
            m.d.comb += ai.eq(rem.any() & (chunk_e + i < C))  # chunks past the fiber are not its
            any_.append(ai)
        found = Signal()
        m.d.comb += found.eq(Cat(*any_).any())
        sel = Signal(range(max(L, 2)))
        for i in reversed(range(L)):  # the lowest chunk with a match wins
            with m.If(any_[i]):
                m.d.comb += sel.eq(i)
        ow = W.bit_length() + max(1, L.bit_length())
        askip = [Const(0, ow)]
        bskip = [Const(0, ow)]
        for i in range(L):  # popcounts of the chunks skipped before chunk i of the window
            sa, sb = Signal(ow, name=f"la_askip{i + 1}"), Signal(ow, name=f"la_bskip{i + 1}")
            m.d.comb += [sa.eq(askip[-1] + popcount(a_ch[i])), sb.eq(bskip[-1] + popcount(b_ch[i]))]
            askip.append(sa)
            bskip.append(sb)
        a_skip = Signal(ow)
        b_skip = Signal(ow)
        consumed_sel = Signal(W)
        m.d.comb += [
            a_skip.eq(Array(askip[:L])[sel]), b_skip.eq(Array(bskip[:L])[sel]),
            consumed_sel.eq(Mux(sel == 0, consumed_e, 0)),
            join.a_mask.eq(Array(a_ch)[sel]),
            join.b_mask.eq(Array(b_ch)[sel]),
            join.consumed.eq(consumed_sel),
            self.b_val_addr.eq(b_ptr_e + b_skip + join.b_offset),
        ]
        mp_in = data.View(mp_layout, fifo_mp.w_data)
        m.d.comb += [
            mp_in.pos.eq(join.pos), mp_in.chunk.eq(chunk_e + sel), mp_in.a_base.eq(a_ptr_e + a_skip),
            fifo_b.w_data.eq(self.b_val_data),
        ]

        # ---- L side: laggy walk with the segment-base cache + correction accumulators ----
        # reached[c] = highest segment of chunk c whose base (ones of the chunk below it) is in
        # ``cache``; the walk computes one more segment base per cycle (the ``laggy_adders``
        # adders), a match whose segment is reached resolves (pops) in one cycle.
        head = data.View(mp_layout, fifo_mp.r_data)
        A = self.laggy_adders
        S = W // A
        lb = (A - 1).bit_length()
        pos_seg = head.pos >> lb if lb else head.pos
        in_seg = head.pos[:lb] if lb else Const(0, 1)
        m.d.comb += self.al_mask_addr.eq(a_row + head.chunk)
        hit = Signal()
        rd_seg = Signal(max(1, (S - 1).bit_length()))
        seg_base = Signal(W.bit_length())
        segbits = Signal(A)
        below = Signal(A)
        bank = Signal()  # segment-base cache bank of the resident row (two with ``row_prefetch``)
        full = Signal()  # the resident row's bank was filled by the walk unit: every base is there
        wk_busy = Signal()  # walk unit filling the other bank for the ``pf`` row
        wk_done = Signal()  # ... and done, until the next row's job switches banks
        if S > 1:
            sw = (S - 1).bit_length()
            span = self.max_chunks * S
            reached = Signal(self.max_chunks * sw)
            w = Signal(sw)
            # One memory per bank, each with one write port: the L side writes the resident row's
            # bank, the walk unit the other, never the same one (so each bank maps to LUT RAM).
            nb = 2 if self.prefetch else 1
            def write_signals(who):
                return {"addr": Signal(range(span), name=f"{who}_wr_addr"),
                        "data": Signal(W.bit_length(), name=f"{who}_wr_data"), "en": Signal(name=f"{who}_wr_en")}
            l_wr, k_wr = write_signals("l"), write_signals("k")  # L side, walk unit
            rd_addr = Signal(range(span))
            rd_data = []
            for b in range(nb):
                mem = Memory(shape=W.bit_length(), depth=span, init=[])
                m.submodules[f"seg_cache{b}"] = mem
                rp = mem.read_port(domain="comb")
                wp = mem.write_port()
                mine = bank == b
                m.d.comb += [rp.addr.eq(rd_addr)] + [getattr(wp, k).eq(Mux(mine, l_wr[k], k_wr[k])) for k in l_wr]
                rd_data.append(rp.data)
            m.d.comb += [
                w.eq(reached.word_select(head.chunk, sw)),
                hit.eq(full | (pos_seg <= w)),
                rd_seg.eq(Mux(hit, pos_seg, w)),
                rd_addr.eq(head.chunk * S + rd_seg),
                # segment 0's base is 0, never stored
                seg_base.eq(Mux(rd_seg == 0, 0, rd_data[0] if nb == 1 else Mux(bank, rd_data[1], rd_data[0]))),
                segbits.eq(self.al_mask_data.word_select(rd_seg, A)),
                l_wr["addr"].eq(head.chunk * S + w + 1),
                l_wr["data"].eq(seg_base + popcount(segbits)),
                l_wr["en"].eq(fifo_mp.r_rdy & ~hit),
            ]
            with m.If(fifo_mp.r_rdy & ~hit):
                m.d.sync += reached.word_select(head.chunk, sw).eq(w + 1)
            if self.prefetch:
                # Walk unit: one segment base per cycle over every chunk of the ``pf`` row into the
                # other bank (its own ``laggy_adders`` adders and A mask read port), so the L side of
                # the next row finds every base cached (hw/README.md "TPPE").
                wk_row = Signal(self.mask_addr_bits)
                wk_c = Signal(cw)
                wk_s = Signal(range(S))
                wk_acc = Signal(W.bit_length())  # ones of chunk wk_c below segment wk_s
                wk_sum = Signal(W.bit_length())
                m.d.comb += [
                    self.pf.ready.eq(~wk_busy & ~wk_done),
                    self.aw_mask_addr.eq(wk_row + wk_c),
                    wk_sum.eq(wk_acc + popcount(self.aw_mask_data.word_select(wk_s, A))),
                    k_wr["addr"].eq(wk_c * S + wk_s + 1), k_wr["data"].eq(wk_sum), k_wr["en"].eq(wk_busy),
                ]
                with m.If(self.pf.valid & self.pf.ready):
                    m.d.sync += [wk_row.eq(self.pf.payload), wk_c.eq(0), wk_s.eq(0), wk_acc.eq(0), wk_busy.eq(1)]
                with m.If(wk_busy):
                    with m.If(wk_s == S - 2):  # the chunk's last base: on to the next chunk
                        m.d.sync += [wk_s.eq(0), wk_acc.eq(0), wk_c.eq(wk_c + 1)]
                        with m.If(wk_c == C - 1):
                            m.d.sync += [wk_busy.eq(0), wk_done.eq(1)]
                    with m.Else():
                        m.d.sync += [wk_s.eq(wk_s + 1), wk_acc.eq(wk_sum)]
        else:
            m.d.comb += [hit.eq(1), rd_seg.eq(0), seg_base.eq(0), segbits.eq(self.al_mask_data)]
        m.d.comb += [
            below.eq(segbits & ((Const(1, A + 1) << in_seg) - 1)[:A]),
            self.a_val_addr.eq(head.a_base + seg_base + popcount(below)),
        ]
        pop = Signal()
        m.d.comb += [fifo_mp.r_en.eq(pop), fifo_b.r_en.eq(pop)]
        w_head = Signal(signed(self.weight_bits))
        m.d.comb += w_head.eq(fifo_b.r_data)

        # ---- result slots: a job whose F side has ended waits here (pseudo, tag, overflow and
        # number of FIFO entries) while the L side finishes its corrections, so the F side of the
        # next jobs runs meanwhile. Slot 0 is the oldest; its corrections are in ``corr``; the result
        # is valid once the L side has popped all its entries (the last correction registered).
        Q = self.result_slots
        slot_layout = data.StructLayout({"pseudo": signed(acc), "tag": unsigned(self.tag_bits),
                                         "ovf": unsigned(1), "count": unsigned(cnt_w)})
        s_valid = [Signal(name=f"slot{i}_valid") for i in range(Q)]
        slot = [Signal(slot_layout, name=f"slot{i}") for i in range(Q)]
        popped = Signal(cnt_w)  # entries of slot 0's job popped so far
        head_done = Signal()
        taken = Signal()
        m.d.comb += [
            head_done.eq(s_valid[0] & (popped == slot[0].count)),
            self.result.valid.eq(head_done),
            taken.eq(head_done & self.result.ready),
        ]
        # A pop belongs to slot 0's job until it is done. Once it is done, the FIFO head belongs to
        # a later job, whose corrections may start only when every earlier result has left: in
        # the cycle slot 0 is taken, unless slot 1 holds a job without matches (still to be taken).
        nxt_ok = ~s_valid[1] | (slot[1].count != 0) if Q > 1 else Const(1, 1)
        m.d.comb += pop.eq(fifo_mp.r_rdy & hit & ~(head_done & ~(taken & nxt_ok)))
        with m.If(taken):
            m.d.sync += popped.eq(pop)
        with m.Elif(pop):
            m.d.sync += popped.eq(popped + 1)
        # Taking the result restarts the correction accumulators; a pop in the same cycle belongs
        # to the next job and adds into zero (the later assignment wins).
        with m.If(taken):
            m.d.sync += corr_ovf.eq(0)
            for t in range(T):
                m.d.sync += corr[t].eq(0)
        for t in range(T):
            with m.If(pop & ~self.a_val_data[t]):
                s = Mux(taken, 0, corr[t]) + w_head
                m.d.sync += corr[t].eq(s)
                if not self.safe:
                    with m.If(s[acc] != s[acc - 1]):  # sign bits differ: the sum wrapped
                        m.d.sync += corr_ovf.eq(1)
        can_end = Signal()  # a slot is free after this cycle
        m.d.comb += can_end.eq(~s_valid[Q - 1] | taken)

        running = Signal()
        cand_push, cand_adv, cand_skip, cand_last, f_ok = (Signal(name=n) for n in (
            "cand_push", "cand_adv", "cand_skip", "cand_last", "f_ok"))
        rest = []  # a match in the window above chunk i
        for i in range(L):
            ri = Signal(name=f"la_rest{i}")
            m.d.comb += ri.eq(Cat(*any_[i + 1:]).any() if i + 1 < L else 0)
            rest.append(ri)
        rest_sel = Signal()
        win_end = Signal()  # the window reaches past the fiber's last chunk
        m.d.comb += [rest_sel.eq(Array(rest)[sel]), win_end.eq(chunk_e + L >= C)]
        with m.If(running):
            with m.If(found):
                m.d.comb += [cand_push.eq(fifo_mp.w_rdy), cand_adv.eq(fifo_mp.w_rdy & join.last)]
            with m.Else():
                m.d.comb += cand_skip.eq(1)
        # The F side ends on the chunk's last match when the rest of the window is empty and reaches
        # past the fiber (no extra cycle to see the trailing empty chunk pairs), or on an empty
        # window that does; it may end only if a result slot is free, else it holds.
        m.d.comb += [
            cand_last.eq((cand_skip | (cand_adv & ~rest_sel)) & win_end),
            f_ok.eq(~cand_last | can_end),
            push.eq(cand_push & f_ok), advance.eq(cand_adv & f_ok), skip_all.eq(cand_skip & f_ok),
            f_last.eq(cand_last & f_ok),
        ]
        f_busy = Signal()
        new_row = Signal()
        m.d.comb += new_row.eq(self.job.payload.new_row | (0 if self.seg_cache else 1))
        # Results still in the slots after this cycle: a job on a new row waits for none (FIFO empty,
        # so the segment-base cache and the A row may be replaced).
        left = Signal(range(Q + 1))
        m.d.comb += left.eq(sum(s_valid) - taken)
        with m.FSM():
            with m.State("IDLE"):
                # A new row also waits for the walk unit to finish the row it is prefetching.
                m.d.comb += [self.job.ready.eq(~new_row | ((left == 0) & ~wk_busy)), running.eq(start)]
                with m.If(start & ~f_last):
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += [running.eq(1), f_busy.eq(1)]
                with m.If(f_last):
                    m.next = "IDLE"
        m.d.comb += self.busy.eq(f_busy | Cat(*s_valid).any())

        m.d.comb += [fifo_mp.w_en.eq(push), fifo_b.w_en.eq(push)]
        pseudo_n = Signal(signed(acc))  # the pseudo-accumulator after this cycle
        m.d.comb += pseudo_n.eq(Mux(push, pseudo_e + self.b_val_data, pseudo_e))
        with m.If(start):
            # The bias is the pseudo-accumulator's initial value: added once per timestep for free.
            m.d.sync += [
                a_row.eq(self.job.payload.a_row), b_col.eq(self.job.payload.b_col),
                a_ptr.eq(self.job.payload.a_ptr), b_ptr.eq(self.job.payload.b_ptr),
                pseudo.eq(self.job.payload.bias), chunk.eq(0), consumed.eq(0), overflow.eq(0),
                tag.eq(self.job.payload.tag), fcount.eq(0),
            ]
            if S > 1:
                with m.If(new_row & wk_done):  # the prefetched row: switch to its full bank
                    m.d.sync += [bank.eq(~bank), full.eq(1), wk_done.eq(0)]
                with m.Elif(new_row):  # cold: the L side walks on demand
                    m.d.sync += [reached.eq(0), full.eq(0)]
        ovf_n = Signal()
        m.d.comb += ovf_n.eq(Mux(start, 0, overflow))
        with m.If(push):
            m.d.sync += [pseudo.eq(pseudo_n), consumed.eq(consumed_sel | join.onehot), chunk.eq(chunk_e + sel),
                         a_ptr.eq(a_ptr_e + a_skip), b_ptr.eq(b_ptr_e + b_skip), fcount.eq(fcount_e + 1)]
        if not self.safe:
            wide = Signal(signed(acc + 1))
            m.d.comb += wide.eq(pseudo_e + self.b_val_data)
            with m.If(push & (wide[acc] != wide[acc - 1])):  # sign bits differ: the sum wrapped
                m.d.comb += ovf_n.eq(1)
                m.d.sync += overflow.eq(1)
        with m.If(advance):
            m.d.sync += [
                chunk.eq(chunk_e + sel + 1), consumed.eq(0),
                a_ptr.eq(a_ptr_e + a_skip + join.a_total), b_ptr.eq(b_ptr_e + b_skip + join.b_total),
            ]
        with m.If(skip_all):
            m.d.sync += [chunk.eq(chunk_e + L), consumed.eq(0),
                         a_ptr.eq(a_ptr_e + askip[L]), b_ptr.eq(b_ptr_e + bskip[L])]
        # Slots: slot 0 leaves when taken (the others move down); an ending job enters the first
        # free slot after that move.
        with m.If(taken):
            for i in range(Q - 1):
                m.d.sync += [s_valid[i].eq(s_valid[i + 1]), slot[i].eq(slot[i + 1])]
            m.d.sync += s_valid[Q - 1].eq(0)
        with m.If(f_last):
            for i in range(Q):
                with m.If(left == i):
                    m.d.sync += [s_valid[i].eq(1), slot[i].pseudo.eq(pseudo_n), slot[i].tag.eq(tag_e),
                                 slot[i].ovf.eq(ovf_n), slot[i].count.eq(fcount_e + push)]
        m.d.comb += self.result.payload.tag.eq(slot[0].tag)
        for t in range(T):
            m.d.comb += self.result.payload.o[t].eq(slot[0].pseudo - corr[t])
        m.d.comb += self.result.payload.overflow.eq(slot[0].ovf | corr_ovf)
        return m
