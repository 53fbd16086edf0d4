"""The LoAS core (hw/README.md "Core"): :class:`CoreMemories` (the memories and their load port),
P :class:`Lane` s (job former -> TPPE -> P-LIF -> output compressor), one scheduler per schedule
(:class:`LockstepScheduler`, :class:`DynamicScheduler`: start/done, the cycle counter, which lane
runs which (row, n)), wired with ``wiring.connect``.
"""

from __future__ import annotations



from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.compress import OutputCompressor
from hw.params import Capacity, CoreParams, Widths, validated, bits
from sim.memory import LINE_REGIONS
from sim.params import SCHEDULES  # noqa: F401 (re-export: the schedulers below, one per name)
from hw.plif import PLIF
from hw.tppe import TPPE, MaskWindowSignature, comb_read, tie_enables



class MemSel(enum.Enum, shape=3):
    """Memory a load-port word goes to (and its address order)."""
    A_MASK = 0  #: A bitmask chunks, row r chunk c at r*C + c
    A_VAL = 1   #: A packed spike words (fiber order)
    A_PTR = 2   #: A row pointers (M + 1)
    B_MASK = 3  #: B bitmask chunks, column n chunk c at n*C + c
    B_VAL = 4   #: B packed weights (fiber order)
    B_PTR = 5   #: B column pointers (N + 1)
    BIAS = 6    #: bias (N)


MEMORIES = {MemSel.A_MASK: "a_mask", MemSel.A_VAL: "a_val", MemSel.A_PTR: "a_ptr", MemSel.B_MASK: "b_mask",
            MemSel.B_VAL: "b_val", MemSel.B_PTR: "b_ptr", MemSel.BIAS: "bias"}


def load_layout(p: CoreParams, line_bits: int | None = None) -> data.StructLayout:
    """Payload of the load port: one word into one memory (with ``line_bits``: one whole line of
    packed words or weights into A_VAL / B_VAL, line ``addr``)."""
    return data.StructLayout({"sel": MemSel, "addr": unsigned(32), "data": unsigned(max(p.chunk_bits, 32, line_bits or 0))})


#: Value memories that hold whole lines when the core is built with ``line_bits`` (the regions
#: the accelerator's fetch unit copies a line per cycle).
LINE_MEMORIES = LINE_REGIONS


def tag_layout(p: CoreParams, cap: Capacity) -> data.StructLayout:
    """(row, n) of a job; rows up to M + 3P so that next_row + rank never wraps onto a real row."""
    return data.StructLayout({"row": range(cap.rows + 3 * p.pes + 1), "n": range(max(cap.cols, 2))})


def lane_layout(p: CoreParams, cap: Capacity) -> data.StructLayout:
    """Payload of one lane's output stream: (row, n) of the result, its spike word after the strong
    mask, its bitmask bit and its index in row ``row``'s packed output fiber."""
    return data.StructLayout({"row": unsigned(bits(cap.rows + 3 * p.pes)), "n": unsigned(bits(cap.cols)),
                              "word": unsigned(p.timesteps), "nz": unsigned(1), "index": unsigned(bits(cap.cols))})


class LaneStatus(wiring.Signature):
    """What a lane tells its scheduler (lane's view): TPPE ``idle`` / ``row_free`` (it would accept
    a job / a new-row job now), ``busy`` (work in flight) and ``active`` (a job holds the lane in
    this cycle: from its accept to its F side's last cycle, a row's last job until the cycle before
    its last result is taken; ``sim.tppe.CoreTiming``'s ``tppe`` occupancy)."""

    def __init__(self):
        super().__init__({"idle": Out(1), "row_free": Out(1), "busy": Out(1), "active": Out(1)})


class ActivitySignature(wiring.Signature):
    """Per cycle of a run, what every lane does (the core's view, for :class:`LaneCounters`):
    ``active`` (P bits: a job holds the lane, :class:`LaneStatus`), ``walk`` (P bits: the lane has its next row but
    waits for its walk unit, with ``lockstep`` once every lane with a next row has finished its
    own) and ``count`` (a cycle of the run: ``cycles`` counts the same ones)."""

    def __init__(self, pes: int):
        super().__init__({"active": Out(pes), "walk": Out(pes), "count": Out(1)})


class LaneCounters(wiring.Component):
    """Where the lanes' cycles go, as registers (``sim.tppe.CoreTiming``'s ``busy`` and stalls).

    Parameters: ``pes`` (P). Ports: ``activity`` In(:class:`ActivitySignature`), ``clear`` In(1)
    (counters to 0); counters ``busy`` Out(array of P x 32: cycles a job holds each lane),
    ``walk_wait`` Out(32) (lane cycles waiting for the walk unit) and ``imbalance`` Out(32) (the
    other lane cycles of the run, in which no job holds the lane while another lane works). In every
    run the three add up to P x ``cycles``: the run's last cycle, in which every lane has taken
    its last result, is counted in ``cycles`` and in none of them, as the first cycle (the start,
    in which the lanes take their first jobs) is counted in them and not in ``cycles``."""

    def __init__(self, pes: int):
        self.pes = pes
        super().__init__({"activity": In(ActivitySignature(pes)), "clear": In(1),
                          "busy": Out(data.ArrayLayout(32, pes)), "walk_wait": Out(32), "imbalance": Out(32)})

    def elaborate(self, platform):
        m = Module()
        act, P = self.activity, self.pes
        on = [act.active[i] for i in range(P)]
        walk = [act.walk[i] for i in range(P)]
        working = Signal()  # some lane holds a job or waits for its walk unit: the run goes on
        m.d.comb += working.eq(act.active.any() | act.walk.any())
        with m.If(self.clear):
            m.d.sync += [self.busy.as_value().eq(0), self.walk_wait.eq(0), self.imbalance.eq(0)]
        with m.Elif(act.count):
            for i in range(P):
                m.d.sync += self.busy[i].eq(self.busy[i] + on[i])
            m.d.sync += self.walk_wait.eq(self.walk_wait + _count(walk))
            with m.If(working):
                m.d.sync += self.imbalance.eq(self.imbalance + (P - _count(on) - _count(walk)))
        return m


def _elem_bits(p: CoreParams) -> dict:
    # bits of one element of a line-wide memory (a power of two, so that lines hold whole elements)
    return {"a_val": 1 << (p.timesteps - 1).bit_length(), "b_val": 1 << (p.weight_bits - 1).bit_length()}


def bank_depths(p: CoreParams, cap: Capacity, line_bits: int | None = None) -> dict:
    """Words per bank of every core memory (name -> depth): the capacity's depths, in lines of
    ``line_bits`` for the line-wide memories (:data:`LINE_MEMORIES`) when given."""
    d, elem = Widths.of(p, cap).depth, _elem_bits(p)
    return {k: -(-d[k] // (line_bits // elem[k])) if line_bits and k in LINE_MEMORIES else d[k]
            for k in MEMORIES.values()}


class CoreMemories(wiring.Component):
    """The core's memories (depths from Capacity) and their load port ``load`` (In(stream of
    (sel, addr, data)), always ready, one word per cycle). Lanes get combinational read ports
    with :meth:`read_port` and L-chunk windows with :meth:`window` (L read ports at addr + i).

    With ``line_bits`` (the accelerator's DRAM line), A_VAL and B_VAL hold whole lines of
    ``line_bits / elem`` packed words / weights (element bits: T and weight_bits rounded up to
    powers of two), one line per load beat; their read ports still read one element (the line at
    addr / elements-per-line, then the element). With ``double`` every memory holds two banks
    (``bank_depth`` words each): the load port's address names the bank (bank 1 from
    ``bank_depth``), the lanes read the bank ``a_bank`` (A memories) / ``b_bank`` (B memories, bias)
    selects, so a tile is fetched into one bank while the core computes on the other."""

    def __init__(self, p: CoreParams, cap: Capacity, line_bits: int | None = None, double: bool = False):
        self.p, self.widths, self.line_bits, self.double = p, Widths.of(p, cap), line_bits, double
        shapes = {"a_mask": p.chunk_bits, "a_val": p.timesteps, "a_ptr": self.widths.a_ptr_bits,
                  "b_mask": p.chunk_bits, "b_val": signed(p.weight_bits), "b_ptr": self.widths.b_ptr_bits,
                  "bias": signed(cap.bias_bits)}
        self.shapes = shapes
        self.elem = _elem_bits(p)
        self.mems, self.bank_depth = {}, bank_depths(p, cap, line_bits)
        for k in MEMORIES.values():
            wide = bool(line_bits) and k in LINE_MEMORIES
            self.mems[k] = Memory(shape=line_bits if wide else shapes[k], depth=self.bank_depth[k] * (2 if double else 1),
                                  init=[])
        self._windows, self._element_ports = [], []
        banks = {"a_bank": In(1), "b_bank": In(1)} if double else {}
        super().__init__({"load": In(stream.Signature(load_layout(p, line_bits))), **banks})

    def _offset(self, name: str):
        """Address of the selected bank's first word (double-buffered memories)."""
        if not self.double:
            return 0
        bank = self.a_bank if name.startswith("a_") else self.b_bank
        return Mux(bank, self.bank_depth[name], 0)

    def read_port(self, name: str):
        if (self.line_bits and name in LINE_MEMORIES) or self.double:
            from amaranth.lib.memory import ReadPort
            from hw.params import addr_width

            ifc = ReadPort.Signature(addr_width=addr_width(self.widths.depth[name]), shape=self.shapes[name]).create()
            self._element_ports.append((name, ifc, self.mems[name].read_port(domain="comb")))
            return ifc
        return self.mems[name].read_port(domain="comb")

    def window(self, name: str):
        win = MaskWindowSignature(addr_bits=self.widths.mask_addr_bits, chunk_bits=self.p.chunk_bits,
                                  chunks=self.p.lookahead).flip().create()
        self._windows.append((name, win, [self.mems[name].read_port(domain="comb") for _ in range(self.p.lookahead)]))
        return win

    def elaborate(self, platform):
        m = Module()
        ld = self.load
        m.d.comb += ld.ready.eq(1)
        for sel, name in MEMORIES.items():
            m.submodules[f"mem_{name}"] = mem = self.mems[name]
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(ld.payload.addr), wp.data.eq(ld.payload.data),
                         wp.en.eq(ld.valid & (ld.payload.sel == sel))]
        for name, win, ports in self._windows:
            for j, rp in enumerate(ports):
                m.d.comb += [rp.addr.eq(win.addr + j + self._offset(name)), win.data[j].eq(rp.data)]
        for name, ifc, rp in self._element_ports:
            if self.line_bits and name in LINE_MEMORIES:
                eb = self.elem[name]
                sh = (self.line_bits // eb).bit_length() - 1
                m.d.comb += [rp.addr.eq((ifc.addr >> sh) + self._offset(name)),
                             ifc.data.eq(rp.data.word_select(ifc.addr[:sh], eb)[:len(ifc.data)])]
            else:
                m.d.comb += [rp.addr.eq(ifc.addr + self._offset(name)), ifc.data.eq(rp.data)]
        return m


class Lane(wiring.Component):
    """One lane: job former (reads the fiber pointers and bias of the job's (row, n)) -> TPPE ->
    P-LIF -> output compressor, all stream stages of latency 0 around the TPPE.

    Ports: ``job`` In(stream of (row, n)), ``pf`` In(stream of the next row), ``out`` Out(stream of
    :func:`lane_layout`), ``status`` Out(LaneStatus); the TPPE's memory ports (``a_win``, ``b_win``,
    ``al_mask``, ``aw_mask``, ``a_val``, ``b_val``) and the job former's ``a_ptr``, ``b_ptr``,
    ``bias``; layer settings ``chunks``, ``cols`` (N: a row's last result), ``threshold``,
    ``decay_shift``, ``n_mask``."""

    def __init__(self, p: CoreParams, cap: Capacity):
        self.p, self.cap = p, cap
        self.tag = tag_layout(p, cap)
        self.tppe = TPPE(p, cap, tag_bits=self.tag.size)
        w = self.widths = self.tppe.widths
        tppe_ports = {k: v for k, v in self.tppe.signature.members.items()
                      if k in ("a_win", "b_win", "al_mask", "aw_mask", "a_val", "b_val", "chunks")}
        super().__init__({
            **tppe_ports,
            "job": In(stream.Signature(self.tag)), "pf": In(stream.Signature(self.tag["row"].shape)),
            "out": Out(stream.Signature(lane_layout(p, cap))), "status": Out(LaneStatus()),
            "a_ptr": comb_read(w.depth["a_ptr"], w.a_ptr_bits), "b_ptr": comb_read(w.depth["b_ptr"], w.b_ptr_bits),
            "bias": comb_read(w.depth["bias"], signed(cap.bias_bits)),
            "threshold": In(signed(w.mem_bits)), "decay_shift": In(5), "n_mask": In(1),
            "cols": In(range(1, cap.cols + 1)),
        })
        tie_enables(self.al_mask, self.aw_mask, self.a_val, self.b_val, self.a_ptr, self.b_ptr, self.bias)
        self.parts = {"tppe": self.tppe, "plif": PLIF(timesteps=p.timesteps, acc_bits=w.acc_bits, mem_bits=w.mem_bits),
                      "comp": OutputCompressor(timesteps=p.timesteps, index_bits=w.index_bits)}

    def elaborate(self, platform):
        m = Module()
        for name, part in self.parts.items():
            m.submodules[name] = part
        t, plif, comp = self.parts["tppe"], self.parts["plif"], self.parts["comp"]
        for name in ("a_win", "b_win", "al_mask", "aw_mask", "a_val", "b_val"):
            wiring.connect(m, wiring.flipped(getattr(self, name)), getattr(t, name))
        job, C = self.job.payload, self.chunks
        m.d.comb += [
            t.chunks.eq(C),
            self.a_ptr.addr.eq(job.row), self.b_ptr.addr.eq(job.n), self.bias.addr.eq(job.n),
            t.job.valid.eq(self.job.valid), self.job.ready.eq(t.job.ready),
            t.job.payload.a_row.eq(job.row * C), t.job.payload.a_ptr.eq(self.a_ptr.data),
            t.job.payload.b_col.eq(job.n * C), t.job.payload.b_ptr.eq(self.b_ptr.data),
            t.job.payload.bias.eq(self.bias.data),
            t.job.payload.new_row.eq(job.n == 0),  # mntk: column 0 starts the lane's next row
            t.job.payload.tag.eq(job),
            t.pf.valid.eq(self.pf.valid), self.pf.ready.eq(t.pf.ready), t.pf.payload.eq(self.pf.payload * C),
            self.status.idle.eq(t.idle), self.status.row_free.eq(t.row_free), self.status.busy.eq(t.busy),
        ]
        rtag = data.View(self.tag, t.result.payload.tag)
        # ``active`` (sim.tppe's job occupancy): a job holds the lane from its accept to its F
        # side's last cycle (the TPPE not idle), a row's last job until the cycle before its last
        # result is taken (``tail``); in that cycle the next row's first job may be accepted. A
        # lane that waits, idle, for the other lanes of a lockstep column holds nothing.
        tail, acc, last = Signal(), Signal(), Signal()
        m.d.comb += [acc.eq(self.job.valid & self.job.ready),
                     last.eq(t.result.valid & t.result.ready & (rtag.n == self.cols - 1)),
                     self.status.active.eq(acc | ~t.idle | (tail & ~last))]
        with m.If(acc & (job.n == self.cols - 1)):
            m.d.sync += tail.eq(1)
        with m.Elif(last):
            m.d.sync += tail.eq(0)
        m.d.comb += [
            plif.i.valid.eq(t.result.valid), plif.i.payload.eq(t.result.payload.o), t.result.ready.eq(plif.i.ready),
            plif.threshold.eq(self.threshold), plif.decay_shift.eq(self.decay_shift),
            comp.i.valid.eq(plif.o.valid), comp.i.payload.word.eq(plif.o.payload), plif.o.ready.eq(comp.i.ready),
            comp.i.payload.first.eq(rtag.n == 0), comp.n_mask.eq(self.n_mask),
            self.out.valid.eq(comp.o.valid), comp.o.ready.eq(self.out.ready),
            self.out.payload.row.eq(rtag.row), self.out.payload.n.eq(rtag.n),
            self.out.payload.word.eq(comp.o.payload.word), self.out.payload.nz.eq(comp.o.payload.nz),
            self.out.payload.index.eq(comp.o.payload.index),
        ]
        return m


def _count(bits_):
    """Number of set bits among a list of 1-bit signals (0 for an empty list)."""
    out = Const(0, 1)
    for b in bits_:
        out = out + b
    return out


class _Scheduler(wiring.Component):
    """Job issue of the mntk loop order (hw/README.md "Core"), shared by both schedules.

    Each lane holds (row, n) of the last job it issued and the row it claimed next; at ``start``
    lane i takes row i, column 0, and claims row P + i, which it hands to its TPPE on ``pf``. A lane
    issues column n + 1, or after column N - 1 column 0 of its claimed row (only once ``pf`` took
    it), and claims the next unclaimed row when it starts one (lanes in the same cycle in lane
    order: ``rank``). Ports: ``start`` In, ``rows``/``cols`` In (run-time M, N), per lane ``job``
    Out(stream of (row, n)), ``pf`` Out(stream of rows), ``status`` In(LaneStatus); ``done`` Out
    (from the end of the run until the next start), ``cycles`` Out(32) (start to last result),
    ``activity`` Out(:class:`ActivitySignature`) (what each lane does in each cycle)."""

    def __init__(self, p: CoreParams, cap: Capacity):
        self.p, self.cap = p, cap
        self.tag = tag_layout(p, cap)
        P = p.pes
        super().__init__({
            "start": In(1), "rows": In(range(1, cap.rows + 1)), "cols": In(range(1, cap.cols + 1)),
            "job": Out(stream.Signature(self.tag)).array(P), "pf": Out(stream.Signature(self.tag["row"].shape)).array(P),
            "status": In(LaneStatus()).array(P), "done": Out(1), "cycles": Out(32),
            "activity": Out(ActivitySignature(P)),
        })

    def gate(self, m, gos, oks, rows_new):
        """Extra condition on every lane's ``job.valid`` (lockstep: all lanes together)."""
        return Const(1, 1)

    def rank(self, i, wants, takes):
        """Lanes before lane i that take a new row in this cycle."""
        raise NotImplementedError

    def elaborate(self, platform):
        m = Module()
        P, N, M = self.p.pes, self.cols, self.rows
        row_shape = self.tag["row"].shape
        next_row = Signal(row_shape)  # first row no lane has claimed
        starting, run = Signal(), Signal()
        last_row = [Signal(row_shape, name=f"last_row{i}") for i in range(P)]
        last_n = [Signal(self.tag["n"].shape, name=f"last_n{i}") for i in range(P)]
        pf_row = [Signal(row_shape, name=f"pf_row{i}") for i in range(P)]
        pf_sent = [Signal(name=f"pf_sent{i}") for i in range(P)]
        wants = [Signal(name=f"wants{i}") for i in range(P)]
        gos = [Signal(name=f"go{i}") for i in range(P)]
        oks, takes, news, jobs = [], [], [], []
        for i in range(P):
            job = self.job[i]
            m.d.comb += wants[i].eq(last_n[i] == N - 1)
            rank = self.rank(i, wants, takes)
            with m.If(starting):
                m.d.comb += [job.payload.row.eq(i), job.payload.n.eq(0)]
            with m.Elif(wants[i]):
                m.d.comb += [job.payload.row.eq(pf_row[i]), job.payload.n.eq(0)]
            with m.Else():
                m.d.comb += [job.payload.row.eq(last_row[i]), job.payload.n.eq(last_n[i] + 1)]
            m.d.comb += gos[i].eq((starting | run) & (job.payload.row < M))
            # A lane starts its claimed row only once its TPPE has taken it on ``pf``: a row that
            # ends in the cycle after it started must not let the next one start cold while the
            # walk unit takes it (it would fill the other bank with a row already run).
            ok = Signal(name=f"pf_ok{i}")
            m.d.comb += ok.eq(starting | ~wants[i] | pf_sent[i] if self.p.prefetch else 1)
            oks.append(ok)
            news.append(job.payload.n == 0)
            xfer = job.valid & job.ready
            take = Signal(name=f"take{i}")
            m.d.comb += take.eq(xfer & wants[i] & ~starting)
            takes.append(take)
            with m.If(xfer):
                m.d.sync += [last_row[i].eq(job.payload.row), last_n[i].eq(job.payload.n)]
            with m.Elif(starting):  # no row for this lane (M < P): it wants one it will never get
                m.d.sync += last_n[i].eq(N - 1)
            pf = self.pf[i]
            m.d.comb += pf.payload.eq(pf_row[i])
            if self.p.prefetch:  # no walk unit: nothing takes a row (an offer would never be taken)
                m.d.comb += pf.valid.eq(run & (pf_row[i] < M) & ~pf_sent[i])
            with m.If(starting):
                m.d.sync += [pf_row[i].eq(P + i), pf_sent[i].eq(0)]
            with m.Elif(take):
                m.d.sync += [pf_row[i].eq(next_row + rank), pf_sent[i].eq(0)]
            with m.Elif(pf.valid & pf.ready):
                m.d.sync += pf_sent[i].eq(1)
        gate = self.gate(m, gos, oks, news)
        m.d.comb += [self.job[i].valid.eq(gos[i] & oks[i] & gate) for i in range(P)]
        idle = Signal()  # nothing to issue and nothing in flight
        m.d.comb += idle.eq(~Cat(*gos).any() & ~Cat(*(s.busy for s in self.status)).any())
        self._control(m, starting, run, idle, next_row, _count(takes))
        # Activity: a lane with a next row (its last job was a column N - 1 and it claimed a row
        # < M) and no row in hand waits for its walk unit (the only thing a new row waits for
        # once its lane is free, and with lockstep once the group's other lanes are free too).
        nexts = [Signal(name=f"has_next{i}") for i in range(P)]
        act = self.activity
        m.d.comb += [nexts[i].eq(run & wants[i] & (pf_row[i] < M)) for i in range(P)]
        m.d.comb += [act.active.eq(Cat(*(s.active for s in self.status))), act.count.eq(starting | (run & ~idle))]
        free = self.group_free(m, nexts)
        m.d.comb += act.walk.eq(Cat(*(n & ~s.active & free for n, s in zip(nexts, self.status))))
        return m

    def group_free(self, m, nexts):
        """Whether a lane with its next row and no row in hand waits for its walk unit (dynamic:
        always; lockstep: once no lane with a next row still holds one)."""
        return Const(1, 1)

    def _control(self, m, starting, run, idle, next_row, taking):
        with m.FSM():
            for state in ("IDLE", "DONE"):
                with m.State(state):
                    if state == "DONE":
                        m.d.comb += self.done.eq(1)
                    with m.If(self.start):
                        m.d.comb += starting.eq(1)
                        m.d.sync += [next_row.eq(2 * self.p.pes), self.cycles.eq(0)]
                        m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += run.eq(1)
                m.d.sync += next_row.eq(next_row + taking)
                with m.If(idle):
                    m.next = "DONE"
                with m.Else():
                    m.d.sync += self.cycles.eq(self.cycles + 1)


class LockstepScheduler(_Scheduler):
    """``lockstep`` (the paper's): the lanes that have a job issue together, when every one of
    their TPPEs would accept it (read from the lanes' ``status``, never from ``job.ready``: valid
    does not wait for ready); one column on the shared B fiber, rows in groups of P."""

    def rank(self, i, wants, takes):
        return _count(wants[:i])  # they all issue together

    def group_free(self, m, nexts):
        free = Signal()  # the group's lanes have all finished their rows: any wait now is the walk's
        m.d.comb += free.eq(~Cat(*(n & s.active for n, s in zip(nexts, self.status))).any())
        return free

    def gate(self, m, gos, oks, news):
        all_ok = Signal()
        new = [n | (0 if self.p.seg_cache else 1) for n in news]
        m.d.comb += all_ok.eq(Cat(*(~g | (s.idle & (~nr | s.row_free) & ok)
                                    for g, s, nr, ok in zip(gos, self.status, new, oks))).all())
        return all_ok


class DynamicScheduler(_Scheduler):
    """``dynamic`` (ours): lanes issue independently; a lane runs its row's N columns back to back
    and then starts the row it claimed."""

    def rank(self, i, wants, takes):
        return _count(takes)  # the lanes before it taking a row now


SCHEDULERS = {"lockstep": LockstepScheduler, "dynamic": DynamicScheduler}


class Core(wiring.Component):
    """LoAS core for one build (hw/README.md "Core").

    Parameters
    ----------
    params : CoreParams   lanes, widths, TPPE options, schedule (sim/params.py)
    cap : Capacity        largest layer the memories hold; the layer's own shape is given at run
                          time (``rows``, ``cols``, ``chunks``), so one build serves every layer that fits
    line_bits : int|None  A_VAL / B_VAL written a whole line per load beat (:class:`CoreMemories`;
                          the accelerator's fetch unit); None = one element per beat
    double : bool         two banks per memory, selected by the ``a_bank`` / ``b_bank`` inputs
                          (the accelerator fetches the next tile while the core computes)

    Ports
    -----
    load : In(stream)    (sel: MemSel, addr, data): one memory word per cycle, always ready
    threshold : In(signed), decay_shift : In(5), n_mask : In(1)   layer LIF / compression settings
    rows, cols, chunks : In   shape of the layer to run (M, N, ceil(K / chunk_bits))
    start : In(1)        pulse: run the whole layer
    done : Out(1)        high from the end of the run until the next start
    cycles : Out(32)     cycles of the last run (sim/tppe.py core_cycles' ``total``)
    activity : Out(ActivitySignature)   per cycle, which lanes hold a row / wait for their walk
                         unit (:class:`LaneCounters` counts them)
    out : Out(stream).array(P)   lane i's results (:func:`lane_layout`) in its jobs' order

    Raises
    ------
    TypeError when params / cap are not CoreParams / Capacity.
    """

    @validated
    def __init__(self, params: CoreParams = CoreParams(), cap: Capacity = Capacity(), line_bits: int | None = None,
                 double: bool = False):
        if not isinstance(params, CoreParams) or not isinstance(cap, Capacity):
            raise TypeError(f"Core takes (CoreParams, Capacity), got ({type(params).__name__}, {type(cap).__name__})")
        self.params, self.cap = params, cap
        self.widths = w = Widths.of(params, cap)
        self.P = params.pes
        super().__init__({
            "load": In(stream.Signature(load_layout(params, line_bits))),
            "threshold": In(signed(w.mem_bits)), "decay_shift": In(5), "n_mask": In(1),
            "rows": In(range(1, cap.rows + 1)), "cols": In(range(1, cap.cols + 1)),
            "chunks": In(range(1, w.chunks + 1)),
            "start": In(1), "done": Out(1), "cycles": Out(32), "activity": Out(ActivitySignature(params.pes)),
            "out": Out(stream.Signature(lane_layout(params, cap))).array(params.pes),
            **({"a_bank": In(1), "b_bank": In(1)} if double else {}),
        })
        self.double = double
        self.parts = {"mems": CoreMemories(params, cap, line_bits, double), "sched": SCHEDULERS[params.schedule](params, cap),
                      **{f"lane{i}": Lane(params, cap) for i in range(params.pes)}}

    def elaborate(self, platform):
        m = Module()
        p = self.params
        for name, part in self.parts.items():
            m.submodules[name] = part
        mems, sched = self.parts["mems"], self.parts["sched"]
        wiring.connect(m, wiring.flipped(self.load), mems.load)
        if self.double:
            m.d.comb += [mems.a_bank.eq(self.a_bank), mems.b_bank.eq(self.b_bank)]
        m.d.comb += [sched.start.eq(self.start), sched.rows.eq(self.rows), sched.cols.eq(self.cols),
                     self.done.eq(sched.done), self.cycles.eq(sched.cycles)]
        wiring.connect(m, sched.activity, wiring.flipped(self.activity))
        for i in range(p.pes):
            lane = self.parts[f"lane{i}"]
            for port in ("a_win", "b_win"):
                wiring.connect(m, getattr(lane, port), mems.window(port[0] + "_mask"))
            for port, mem in (("al_mask", "a_mask"), ("aw_mask", "a_mask"), ("a_val", "a_val"), ("b_val", "b_val"),
                              ("a_ptr", "a_ptr"), ("b_ptr", "b_ptr"), ("bias", "bias")):
                wiring.connect(m, getattr(lane, port), mems.read_port(mem))
            wiring.connect(m, sched.job[i], lane.job)
            wiring.connect(m, sched.pf[i], lane.pf)
            wiring.connect(m, lane.status, sched.status[i])
            wiring.connect(m, lane.out, wiring.flipped(self.out[i]))
            m.d.comb += [lane.chunks.eq(self.chunks), lane.cols.eq(self.cols), lane.threshold.eq(self.threshold),
                         lane.decay_shift.eq(self.decay_shift), lane.n_mask.eq(self.n_mask)]
        return m
