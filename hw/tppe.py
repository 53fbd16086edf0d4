"""TPPE: temporal-parallel processing element (spec/loas.md section 4; hw/README.md "TPPE").

One TPPE computes one output neuron (m, n) for all T timesteps. Its parts, each its own component:

* :class:`LookaheadWindow` + :class:`FSide`: the fast join over ``lookahead`` chunk pairs and the
  pseudo-accumulator; one match per cycle goes into the match queue.
* :class:`MatchQueue`: a stream FIFO of (position, chunk, A base, weight).
* :class:`LSide`: the laggy A-side walk with the segment-base cache (:class:`~hw.prefix.LaggyPrefixSum`
  step); it fetches each match's real spike word and hands (spikes, weight) to the corrections.
* :class:`WalkUnit`: fills the other cache bank with the next row's segment bases (row prefetch).
* :class:`ResultSlots`: jobs whose F side has ended, the correction accumulators and the result
  O[t] = pseudo - correction[t].

Cycle contract: sim/tppe.py.
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory, ReadPort
from amaranth.lib.wiring import In, Out

from hw.join import InnerJoin
from hw.params import Capacity, CoreParams, Widths, validated, acc_bits_for, addr_width  # noqa: F401 (re-export)
from hw.prefix import LaggyPrefixSum, popcount


class MaskWindowSignature(wiring.Signature):
    """Read port of ``chunks`` consecutive bitmask chunks (initiator's view): ``addr`` (Out) the
    first chunk's address, ``data`` (In) chunk addr + i in element i. Combinational."""

    def __init__(self, *, addr_bits: int, chunk_bits: int, chunks: int):
        super().__init__({"addr": Out(addr_bits), "data": In(data.ArrayLayout(unsigned(chunk_bits), chunks))})


class FillSignature(wiring.Signature):
    """Write port into the segment-base cache (initiator's view: the walk unit)."""

    def __init__(self, *, depth: int, base_bits: int):
        super().__init__({"addr": Out(range(depth)), "data": Out(base_bits), "en": Out(1)})


def comb_read(depth: int, shape):
    """Member of a combinational memory read port (initiator's view of ``lib.memory``'s
    ``ReadPort.Signature``); tie its ``en`` with :func:`tie_enables` (comb ports are always on)."""
    return In(ReadPort.Signature(addr_width=addr_width(depth), shape=shape))


def tie_enables(*ports):
    for p in ports:
        p.en = Const(1)


def layouts(p: CoreParams, w: Widths, cap: Capacity, tag_bits: int) -> dict:
    """Payload layouts of the TPPE's streams (job, result, match queue, slot entry, correction)."""
    pw = max(1, (p.chunk_bits - 1).bit_length())
    cw = max(1, w.chunks.bit_length())  # = len of the run-time ``chunks`` input range(1, C + 1)
    cnt_w = (w.chunks * p.chunk_bits).bit_length()  # FIFO entries of one job: at most C * W
    return {
        "job": data.StructLayout({
            "a_row": unsigned(w.mask_addr_bits), "a_ptr": unsigned(w.a_ptr_bits),
            "b_col": unsigned(w.mask_addr_bits), "b_ptr": unsigned(w.b_ptr_bits),
            "bias": signed(cap.bias_bits), "new_row": unsigned(1),
            "tag": unsigned(tag_bits)}),
        "result": data.StructLayout({"o": data.ArrayLayout(signed(w.acc_bits), p.timesteps),
                                     "overflow": unsigned(1), "tag": unsigned(tag_bits)}),
        "match": data.StructLayout({"pos": unsigned(pw), "chunk": unsigned(cw), "a_base": unsigned(w.a_ptr_bits),
                                    "weight": signed(p.weight_bits)}),
        "slot": data.StructLayout({"pseudo": signed(w.acc_bits), "tag": unsigned(tag_bits), "ovf": unsigned(1),
                                   "count": unsigned(cnt_w)}),
        "corr": data.StructLayout({"spikes": unsigned(p.timesteps), "weight": signed(p.weight_bits)}),
    }


class LookaheadWindow(wiring.Component):
    """The F side's window of L chunk pairs (combinational): the first chunk pair with a match
    (``sel``), the popcounts of the chunks before it (``a_skip``/``b_skip``) and of all L
    (``a_all``/``b_all``), whether a chunk above it has a match (``rest``), whether the window
    reaches past the fiber (``end``). Chunk pairs past the fiber's ``chunks`` are masked off."""

    def __init__(self, p: CoreParams, w: Widths):
        self.L, self.W = p.lookahead, p.chunk_bits
        ow = self.W.bit_length() + max(1, self.L.bit_length())
        super().__init__({
            "a": In(data.ArrayLayout(unsigned(self.W), self.L)), "b": In(data.ArrayLayout(unsigned(self.W), self.L)),
            "consumed": In(self.W), "chunk": In(max(1, w.chunks.bit_length())), "chunks": In(range(1, w.chunks + 1)),
            "found": Out(1), "sel": Out(range(max(self.L, 2))), "a_skip": Out(ow), "b_skip": Out(ow),
            "a_all": Out(ow), "b_all": Out(ow), "rest": Out(1), "end": Out(1),
            "a_sel": Out(self.W), "b_sel": Out(self.W), "consumed_sel": Out(self.W),
        })

    def elaborate(self, platform):
        m = Module()
        L, W = self.L, self.W
        a_ch = [self.a[i] for i in range(L)]
        b_ch = [self.b[i] for i in range(L)]
        any_ = []
        for i in range(L):
            ai = Signal(name=f"la_any{i}")
            rem = a_ch[i] & b_ch[i] & (~self.consumed if i == 0 else Const(-1, W))
            m.d.comb += ai.eq(rem.any() & (self.chunk + i < self.chunks))  # chunks past the fiber are not its
            any_.append(ai)
        m.d.comb += self.found.eq(Cat(*any_).any())
        for i in reversed(range(L)):  # the lowest chunk with a match wins
            with m.If(any_[i]):
                m.d.comb += self.sel.eq(i)
        ow = len(self.a_skip)
        askip, bskip = [Const(0, ow)], [Const(0, ow)]
        for i in range(L):  # popcounts of the chunks skipped before chunk i of the window
            sa, sb = Signal(ow, name=f"la_askip{i + 1}"), Signal(ow, name=f"la_bskip{i + 1}")
            m.d.comb += [sa.eq(askip[-1] + popcount(a_ch[i], m, platform)),
                         sb.eq(bskip[-1] + popcount(b_ch[i], m, platform))]
            askip.append(sa)
            bskip.append(sb)
        rest = []  # a match in the window above chunk i
        for i in range(L):
            ri = Signal(name=f"la_rest{i}")
            m.d.comb += ri.eq(Cat(*any_[i + 1:]).any() if i + 1 < L else 0)
            rest.append(ri)
        m.d.comb += [
            self.a_skip.eq(Array(askip[:L])[self.sel]), self.b_skip.eq(Array(bskip[:L])[self.sel]),
            self.a_all.eq(askip[L]), self.b_all.eq(bskip[L]),
            self.consumed_sel.eq(Mux(self.sel == 0, self.consumed, 0)),
            self.a_sel.eq(Array(a_ch)[self.sel]), self.b_sel.eq(Array(b_ch)[self.sel]),
            self.rest.eq(Array(rest)[self.sel]), self.end.eq(self.chunk + L >= self.chunks),
        ]
        return m


class FSide(wiring.Component):
    """F side: job registers, lookahead window, inner join and pseudo-accumulator.

    Ports: ``job`` In(stream) (accepted when ``idle`` and, for a new-row job, ``row_free``; its F
    side runs in the accept cycle on the payload); ``a_win``/``b_win`` mask windows, ``b_val`` weight
    read; ``push`` Out(stream of matches) one per cycle (a full queue stalls everything); ``end``
    Out(stream of slot entries) on the F side's last cycle (no free slot: the F side holds);
    ``a_row`` the resident row's A mask address; ``row_start`` a new-row job is accepted;
    ``busy`` in state RUN. Latency: the accept cycle is the first F cycle."""

    def __init__(self, p: CoreParams, w: Widths, lay: dict):
        self.p, self.w, self.lay = p, w, lay
        win = dict(addr_bits=w.mask_addr_bits, chunk_bits=p.chunk_bits, chunks=p.lookahead)
        super().__init__({
            "job": In(stream.Signature(lay["job"])), "chunks": In(range(1, w.chunks + 1)),
            "a_win": Out(MaskWindowSignature(**win)), "b_win": Out(MaskWindowSignature(**win)),
            "b_val": comb_read(w.depth["b_val"], signed(p.weight_bits)),
            "push": Out(stream.Signature(lay["match"])), "end": Out(stream.Signature(lay["slot"])),
            "row_free": In(1), "idle": Out(1), "busy": Out(1), "a_row": Out(w.mask_addr_bits), "row_start": Out(1),
        })
        tie_enables(self.b_val)

    def elaborate(self, platform):
        m = Module()
        p, w, W, L = self.p, self.w, self.p.chunk_bits, self.p.lookahead
        acc = w.acc_bits
        m.submodules.window = win = LookaheadWindow(p, w)
        m.submodules.join = join = InnerJoin(chunk_bits=W)
        job, pl = self.job, self.job.payload
        b_col, chunk, consumed = Signal(w.mask_addr_bits), Signal(len(win.chunk)), Signal(W)
        a_ptr, b_ptr = Signal(w.a_ptr_bits), Signal(w.b_ptr_bits)
        pseudo, overflow = Signal(signed(acc)), Signal()
        tag, fcount = Signal(len(pl.tag)), Signal(len(self.end.payload.count))
        start = Signal()
        m.d.comb += start.eq(job.valid & job.ready)
        # The job being accepted runs in its accept cycle on the payload, through a mux in front
        # of the registers (hw/README.md "TPPE").
        e = {k: Mux(start, getattr(pl, k), r) for k, r in (("a_row", self.a_row), ("b_col", b_col),
                                                           ("a_ptr", a_ptr), ("b_ptr", b_ptr), ("tag", tag))}
        chunk_e, consumed_e, fcount_e = Mux(start, 0, chunk), Mux(start, 0, consumed), Mux(start, 0, fcount)
        pseudo_e = Signal(signed(acc))
        m.d.comb += [
            pseudo_e.eq(Mux(start, pl.bias, pseudo)),
            self.a_win.addr.eq(e["a_row"] + chunk_e), self.b_win.addr.eq(e["b_col"] + chunk_e),
            win.a.eq(self.a_win.data), win.b.eq(self.b_win.data), win.consumed.eq(consumed_e),
            win.chunk.eq(chunk_e), win.chunks.eq(self.chunks),
            join.a_mask.eq(win.a_sel), join.b_mask.eq(win.b_sel), join.consumed.eq(win.consumed_sel),
            self.b_val.addr.eq(e["b_ptr"] + win.b_skip + join.b_offset),
            self.push.payload.pos.eq(join.pos), self.push.payload.chunk.eq(chunk_e + win.sel),
            self.push.payload.a_base.eq(e["a_ptr"] + win.a_skip), self.push.payload.weight.eq(self.b_val.data),
        ]
        running = Signal()
        # The F side ends on the chunk's last match when the rest of the window is empty and reaches
        # past the fiber, or on an empty window that does; it may end only into a free result slot.
        last_match = Signal()
        m.d.comb += last_match.eq(join.last & ~win.rest & win.end)
        pushed = self.push.valid & self.push.ready
        ended = Signal()
        skip_all = Signal()
        m.d.comb += [
            self.push.valid.eq(running & win.found & (~last_match | self.end.ready)),
            self.end.valid.eq(running & Mux(win.found, last_match & self.push.ready, win.end)),
            ended.eq(self.end.valid & self.end.ready),
            skip_all.eq(running & ~win.found & (~win.end | self.end.ready)),
        ]
        new_row = pl.new_row | (0 if p.seg_cache else 1)
        m.d.comb += self.row_start.eq(start & new_row)
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += [self.idle.eq(1), job.ready.eq(~new_row | self.row_free), running.eq(start)]
                with m.If(start & ~ended):
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += [running.eq(1), self.busy.eq(1)]
                with m.If(ended):
                    m.next = "IDLE"
        # The pseudo-accumulator after this cycle if the window's match is pushed: the ``end`` beat
        # carries it from its first cycle (it is taken only together with that push), so its
        # payload does not change while it waits for a slot.
        pseudo_n = Signal(signed(acc))
        ovf_n = Signal()
        m.d.comb += [pseudo_n.eq(Mux(win.found, pseudo_e + self.b_val.data, pseudo_e)), ovf_n.eq(Mux(start, 0, overflow))]
        with m.If(start):  # the bias is the pseudo-accumulator's initial value
            m.d.sync += [self.a_row.eq(pl.a_row), b_col.eq(pl.b_col), a_ptr.eq(pl.a_ptr), b_ptr.eq(pl.b_ptr),
                         pseudo.eq(pl.bias), chunk.eq(0), consumed.eq(0), overflow.eq(0), tag.eq(pl.tag), fcount.eq(0)]
        with m.If(pushed):
            m.d.sync += [pseudo.eq(pseudo_n), consumed.eq(win.consumed_sel | join.onehot), chunk.eq(chunk_e + win.sel),
                         a_ptr.eq(e["a_ptr"] + win.a_skip), b_ptr.eq(e["b_ptr"] + win.b_skip), fcount.eq(fcount_e + 1)]
        if not w.safe:
            wide = Signal(signed(acc + 1))
            m.d.comb += wide.eq(pseudo_e + self.b_val.data)
            with m.If(win.found & (wide[acc] != wide[acc - 1])):  # sign bits differ: the sum wrapped
                m.d.comb += ovf_n.eq(1)
                with m.If(pushed):
                    m.d.sync += overflow.eq(1)
        with m.If(pushed & join.last):  # the chunk pair's last match: on to the next chunk
            m.d.sync += [chunk.eq(chunk_e + win.sel + 1), consumed.eq(0),
                         a_ptr.eq(e["a_ptr"] + win.a_skip + join.a_total), b_ptr.eq(e["b_ptr"] + win.b_skip + join.b_total)]
        with m.If(skip_all):
            m.d.sync += [chunk.eq(chunk_e + L), consumed.eq(0), a_ptr.eq(e["a_ptr"] + win.a_all),
                         b_ptr.eq(e["b_ptr"] + win.b_all)]
        m.d.comb += [self.end.payload.pseudo.eq(pseudo_n), self.end.payload.tag.eq(e["tag"]),
                     self.end.payload.ovf.eq(ovf_n), self.end.payload.count.eq(fcount_e + win.found)]
        return m


class MatchQueue(wiring.Component):
    """FIFO-mp and FIFO-B as one stream FIFO of matches (``SyncFIFO``, depth ``fifo_depth``: full at
    ``level == depth``, a pop in the same cycle does not free a slot). Latency 1 (push to head)."""

    def __init__(self, layout, depth: int):
        self.layout, self.depth = layout, depth
        super().__init__({"i": In(stream.Signature(layout)), "o": Out(stream.Signature(layout))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = fifo = SyncFIFO(width=self.layout.size, depth=self.depth)
        m.d.comb += [fifo.w_data.eq(self.i.payload), fifo.w_en.eq(self.i.valid), self.i.ready.eq(fifo.w_rdy),
                     self.o.payload.eq(fifo.r_data), self.o.valid.eq(fifo.r_rdy), fifo.r_en.eq(self.o.ready)]
        return m


class LSide(wiring.Component):
    """L side: resolves the match queue's head against the laggy A-side prefix-sum.

    Keeps per chunk c of the resident row ``reached[c]`` and the segment-base cache (one memory
    per bank; the walk unit writes the other bank through ``fill``). A head whose segment is
    reached goes out on ``corr`` with its real spike word (read on ``a_val``) in the same cycle;
    otherwise the walk computes one more base (one :class:`LaggyPrefixSum` step). ``row_start``
    (a new-row job is accepted): with ``warm`` (the walk unit filled the other bank) the banks
    switch and the row is *full* (every base cached), else ``reached`` clears (cold row)."""

    def __init__(self, p: CoreParams, w: Widths, lay: dict):
        self.p, self.w = p, w
        S, W = p.segments, p.chunk_bits
        self.span = w.chunks * S
        super().__init__({
            "i": In(stream.Signature(lay["match"])), "corr": Out(stream.Signature(lay["corr"])),
            "a_row": In(w.mask_addr_bits), "al_mask": comb_read(w.depth["a_mask"], W),
            "a_val": comb_read(w.depth["a_val"], p.timesteps),
            "fill": In(FillSignature(depth=max(2, self.span), base_bits=W.bit_length())),
            "row_start": In(1), "warm": In(1),
        })
        tie_enables(self.al_mask, self.a_val)

    def elaborate(self, platform):
        m = Module()
        p, W, A, S = self.p, self.p.chunk_bits, self.p.laggy_adders, self.p.segments
        head = self.i.payload
        lb = (A - 1).bit_length()
        m.submodules.laggy = laggy = LaggyPrefixSum(chunk_bits=W, adders=A, ptr_bits=W.bit_length())
        hit = Signal()
        m.d.comb += [self.al_mask.addr.eq(self.a_row + head.chunk), laggy.mask.eq(self.al_mask.data),
                     laggy.pos.eq(head.pos[:lb] if lb else 0)]
        if S > 1:
            self._walk(m, laggy, hit)
        else:
            m.d.comb += hit.eq(1)
        m.d.comb += [
            self.a_val.addr.eq(head.a_base + laggy.offset),
            self.corr.valid.eq(self.i.valid & hit), self.i.ready.eq(self.corr.ready & hit),
            self.corr.payload.spikes.eq(self.a_val.data), self.corr.payload.weight.eq(head.weight),
        ]
        return m

    def _walk(self, m, laggy, hit):
        """Segment-base cache, ``reached`` and the walk step (S > 1)."""
        W, S, head = self.p.chunk_bits, self.p.segments, self.i.payload
        lb = (self.p.laggy_adders - 1).bit_length()
        pos_seg = head.pos >> lb if lb else head.pos
        sw = (S - 1).bit_length()
        reached = Signal(self.w.chunks * sw)
        bank = Signal()  # bank of the resident row (two with the row prefetch)
        full = Signal()  # the resident row's bank was filled by the walk unit: every base is there
        r = Signal(sw)
        rd_seg = Signal(sw)
        rd_addr = Signal(range(self.span))
        own = {"addr": Signal(range(self.span)), "data": Signal(W.bit_length()), "en": Signal()}
        rd_data = []
        # One memory per bank, each with one write port: the L side writes the resident row's
        # bank, the walk unit the other, never the same one (so each bank maps to LUT RAM).
        for b in range(2 if self.p.prefetch else 1):
            mem = Memory(shape=W.bit_length(), depth=self.span, init=[])
            m.submodules[f"seg_cache{b}"] = mem
            rp, wp = mem.read_port(domain="comb"), mem.write_port()
            m.d.comb += [rp.addr.eq(rd_addr)] + [getattr(wp, k).eq(Mux(bank == b, own[k], getattr(self.fill, k)))
                                                for k in own]
            rd_data.append(rp.data)
        seg_base = Mux(rd_seg == 0, 0, rd_data[0] if len(rd_data) == 1 else Mux(bank, rd_data[1], rd_data[0]))
        walk = self.i.valid & ~hit
        m.d.comb += [
            r.eq(reached.word_select(head.chunk, sw)),
            hit.eq(full | (pos_seg <= r)),
            rd_seg.eq(Mux(hit, pos_seg, r)),
            rd_addr.eq(head.chunk * S + rd_seg),
            laggy.seg.eq(rd_seg), laggy.base.eq(seg_base),  # segment 0's base is 0, never stored
            own["addr"].eq(head.chunk * S + r + 1), own["data"].eq(laggy.next), own["en"].eq(walk),
        ]
        with m.If(walk):
            m.d.sync += reached.word_select(head.chunk, sw).eq(r + 1)
        with m.If(self.row_start & self.warm):  # the prefetched row: switch to its full bank
            m.d.sync += [bank.eq(~bank), full.eq(1)]
        with m.Elif(self.row_start):  # cold: the L side walks on demand
            m.d.sync += [reached.eq(0), full.eq(0)]


class WalkUnit(wiring.Component):
    """Row prefetch: takes the next row's A mask address on ``pf`` when free and writes every
    segment base of that row into the other cache bank (``fill``), one per cycle (its own
    :class:`LaggyPrefixSum` step and ``aw_mask`` read port): C * (S - 1) cycles. ``busy`` while
    walking; ``done`` from then until ``row_start`` (the row's first job switches banks)."""

    def __init__(self, p: CoreParams, w: Widths):
        self.p, self.w = p, w
        W = p.chunk_bits
        super().__init__({
            "pf": In(stream.Signature(unsigned(w.mask_addr_bits))), "aw_mask": comb_read(w.depth["a_mask"], W),
            "fill": Out(FillSignature(depth=max(2, w.chunks * p.segments), base_bits=W.bit_length())),
            "chunks": In(range(1, w.chunks + 1)), "row_start": In(1), "busy": Out(1), "done": Out(1),
        })
        tie_enables(self.aw_mask)

    def elaborate(self, platform):
        m = Module()
        p, W, S = self.p, self.p.chunk_bits, self.p.segments
        m.submodules.laggy = laggy = LaggyPrefixSum(chunk_bits=W, adders=p.laggy_adders, ptr_bits=W.bit_length())
        row = Signal(self.w.mask_addr_bits)
        c = Signal(max(1, self.w.chunks.bit_length()))
        s = Signal(range(S))
        acc = Signal(W.bit_length())  # ones of chunk c below segment s
        busy, done = self.busy, self.done
        m.d.comb += [
            self.pf.ready.eq(~busy & ~done),
            self.aw_mask.addr.eq(row + c),
            laggy.mask.eq(self.aw_mask.data), laggy.seg.eq(s), laggy.base.eq(acc),
            self.fill.addr.eq(c * S + s + 1), self.fill.data.eq(laggy.next), self.fill.en.eq(busy),
        ]
        with m.If(self.pf.valid & self.pf.ready):
            m.d.sync += [row.eq(self.pf.payload), c.eq(0), s.eq(0), acc.eq(0), busy.eq(1)]
        with m.If(busy):
            with m.If(s == S - 2):  # the chunk's last base: on to the next chunk
                m.d.sync += [s.eq(0), acc.eq(0), c.eq(c + 1)]
                with m.If(c == self.chunks - 1):
                    m.d.sync += [busy.eq(0), done.eq(1)]
            with m.Else():
                m.d.sync += [s.eq(s + 1), acc.eq(laggy.next)]
        with m.If(self.row_start & done):
            m.d.sync += done.eq(0)
        return m


class ResultSlots(wiring.Component):
    """Result slots and correction accumulators.

    ``end`` In(stream of slot entries: pseudo, tag, overflow, FIFO entries of the job) takes a job
    whose F side ended into the first free slot (ready: a slot is free after this cycle). ``corr``
    In(stream of (spikes, weight)) adds the weight into correction[t] for every t whose spike bit
    is 0; one belongs to slot 0's job until it is done, a later job's waits until every earlier
    result has left. ``result`` Out(stream): slot 0's O[t] = pseudo - correction[t], valid once all
    its entries were corrected (latency 1 after the last). ``left``: results still held after this
    cycle; ``held``: any slot full."""

    def __init__(self, p: CoreParams, w: Widths, lay: dict):
        self.p, self.w = p, w
        super().__init__({
            "end": In(stream.Signature(lay["slot"])), "corr": In(stream.Signature(lay["corr"])),
            "result": Out(stream.Signature(lay["result"])), "left": Out(range(p.result_slots + 1)), "held": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        Q, T, acc = self.p.result_slots, self.p.timesteps, self.w.acc_bits
        s_valid = [Signal(name=f"slot{i}_valid") for i in range(Q)]
        slot = [Signal(self.end.payload.shape(), name=f"slot{i}") for i in range(Q)]
        corr = Signal(data.ArrayLayout(signed(acc), T))
        corr_ovf = Signal()  # a correction accumulator of slot 0's job wrapped
        popped = Signal(len(slot[0].count))  # entries of slot 0's job corrected so far
        head_done, taken = Signal(), Signal()
        m.d.comb += [head_done.eq(s_valid[0] & (popped == slot[0].count)), self.result.valid.eq(head_done),
                     taken.eq(head_done & self.result.ready)]
        # Once slot 0 is done, a correction belongs to a later job: it may start only in the cycle
        # slot 0 is taken, unless slot 1 holds a job without matches (still to be taken).
        nxt_ok = ~s_valid[1] | (slot[1].count != 0) if Q > 1 else Const(1, 1)
        pop = Signal()
        m.d.comb += [self.corr.ready.eq(~(head_done & ~(taken & nxt_ok))), pop.eq(self.corr.valid & self.corr.ready)]
        with m.If(taken):
            m.d.sync += popped.eq(pop)
        with m.Elif(pop):
            m.d.sync += popped.eq(popped + 1)
        # Taking the result restarts the accumulators; a correction in the same cycle belongs to
        # the next job and adds into zero (the later assignment wins).
        with m.If(taken):
            m.d.sync += [corr_ovf.eq(0)] + [corr[t].eq(0) for t in range(T)]
        for t in range(T):
            with m.If(pop & ~self.corr.payload.spikes[t]):
                s = Mux(taken, 0, corr[t]) + self.corr.payload.weight
                m.d.sync += corr[t].eq(s)
                if not self.w.safe:
                    with m.If(s[acc] != s[acc - 1]):  # sign bits differ: the sum wrapped
                        m.d.sync += corr_ovf.eq(1)
        m.d.comb += [self.end.ready.eq(~s_valid[Q - 1] | taken), self.left.eq(sum(s_valid) - taken),
                     self.held.eq(Cat(*s_valid).any())]
        # Slot 0 leaves when taken (the others move down); an ending job enters the first free
        # slot after that move.
        with m.If(taken):
            for i in range(Q - 1):
                m.d.sync += [s_valid[i].eq(s_valid[i + 1]), slot[i].eq(slot[i + 1])]
            m.d.sync += s_valid[Q - 1].eq(0)
        with m.If(self.end.valid & self.end.ready):
            for i in range(Q):
                with m.If(self.left == i):
                    m.d.sync += [s_valid[i].eq(1), slot[i].eq(self.end.payload)]
        m.d.comb += [self.result.payload.tag.eq(slot[0].tag), self.result.payload.overflow.eq(slot[0].ovf | corr_ovf)]
        m.d.comb += [self.result.payload.o[t].eq(slot[0].pseudo - corr[t]) for t in range(T)]
        return m


class TPPE(wiring.Component):
    """Temporal-parallel processing element with speculative pseudo-accumulation.

    Parameters
    ----------
    params : CoreParams   T, W, weight width, laggy adders, FIFO depth, lookahead, result slots,
                          seg_cache, row_prefetch, acc_bits (sim/params.py)
    cap : Capacity        largest layer (sizes the widths and the memory ports' address widths)
    tag_bits : int        width of the job's tag, returned with its result

    Ports
    -----
    job : In(stream)     ``a_row`` (mask address of A chunk 0), ``a_ptr`` (A value address of the
                         fiber), ``b_col``, ``b_ptr``, ``bias``, ``new_row`` (the A row differs from
                         the previous job's), ``tag``; ready when ``idle`` and, for a new-row job,
                         ``row_free``
    result : Out(stream) ``o`` (T signed accumulators), ``overflow``, ``tag``
    pf : In(stream)      A mask address of the lane's next row (taken when the walk unit is free)
    chunks : In          chunks per fiber of the running layer
    a_win, b_win : MaskWindowSignature   the F side's ``lookahead`` chunks per side
    al_mask, aw_mask, a_val, b_val : comb memory read ports (``lib.memory`` ReadPort.Signature):
                         L side A mask, walk unit A mask, spike words, weights
    idle, row_free : Out  status the schedulers read instead of ``job.ready`` (which is
                         ``idle & (~new_row | row_free)``); busy : Out  F side running or a slot full

    Raises
    ------
    TypeError, ValueError from CoreParams / Capacity; TypeError when they are not those types.
    """

    @validated
    def __init__(self, params: CoreParams = CoreParams(), cap: Capacity = Capacity(), *, tag_bits: int = 1):
        if not isinstance(params, CoreParams) or not isinstance(cap, Capacity):
            raise TypeError(f"TPPE takes (CoreParams, Capacity), got ({type(params).__name__}, {type(cap).__name__})")
        self.params, self.cap = params, cap
        self.widths = w = Widths.of(params, cap)
        self.lay = lay = layouts(params, w, cap, tag_bits)
        self.prefetch = params.prefetch
        W = params.chunk_bits
        win = dict(addr_bits=w.mask_addr_bits, chunk_bits=W, chunks=params.lookahead)
        super().__init__({
            "job": In(stream.Signature(lay["job"])), "result": Out(stream.Signature(lay["result"])),
            "pf": In(stream.Signature(unsigned(w.mask_addr_bits))), "chunks": In(range(1, w.chunks + 1)),
            "a_win": Out(MaskWindowSignature(**win)), "b_win": Out(MaskWindowSignature(**win)),
            "al_mask": comb_read(w.depth["a_mask"], W), "aw_mask": comb_read(w.depth["a_mask"], W),
            "a_val": comb_read(w.depth["a_val"], params.timesteps),
            "b_val": comb_read(w.depth["b_val"], signed(params.weight_bits)),
            "idle": Out(1), "row_free": Out(1), "busy": Out(1),
        })
        tie_enables(self.al_mask, self.aw_mask, self.a_val, self.b_val)
        self.parts = {"f": FSide(params, w, lay), "queue": MatchQueue(lay["match"], params.fifo_depth),
                      "l": LSide(params, w, lay), "slots": ResultSlots(params, w, lay)}
        if self.prefetch:
            self.parts["walk"] = WalkUnit(params, w)

    def elaborate(self, platform):
        m = Module()
        for name, part in self.parts.items():
            m.submodules[name] = part
        f, queue, l, slots = (self.parts[k] for k in ("f", "queue", "l", "slots"))
        for port in ("job", "a_win", "b_win", "b_val"):
            wiring.connect(m, wiring.flipped(getattr(self, port)), getattr(f, port))
        wiring.connect(m, wiring.flipped(self.al_mask), l.al_mask)
        wiring.connect(m, wiring.flipped(self.a_val), l.a_val)
        wiring.connect(m, wiring.flipped(self.result), slots.result)
        wiring.connect(m, f.push, queue.i)
        wiring.connect(m, queue.o, l.i)
        wiring.connect(m, l.corr, slots.corr)
        wiring.connect(m, f.end, slots.end)
        wk_busy = Const(0, 1)
        if self.prefetch:
            walk = self.parts["walk"]
            wiring.connect(m, wiring.flipped(self.pf), walk.pf)
            wiring.connect(m, wiring.flipped(self.aw_mask), walk.aw_mask)
            wiring.connect(m, walk.fill, l.fill)
            m.d.comb += [walk.chunks.eq(self.chunks), walk.row_start.eq(f.row_start), l.warm.eq(walk.done)]
            wk_busy = walk.busy
        # A new row waits until no result is left after this cycle (the queue is empty: the cache
        # and the A row may change) and the walk unit is not walking.
        m.d.comb += [
            f.chunks.eq(self.chunks), l.a_row.eq(f.a_row), l.row_start.eq(f.row_start),
            f.row_free.eq((slots.left == 0) & ~wk_busy),
            self.idle.eq(f.idle), self.row_free.eq(f.row_free), self.busy.eq(f.busy | slots.held),
        ]
        return m

    def accepts(self, new_row):
        """``job.ready`` as a function of the job's ``new_row`` bit, from the status outputs only."""
        return self.idle & (~(new_row | (0 if self.params.seg_cache else 1)) | self.row_free)

