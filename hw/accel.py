"""The LoAS accelerator around the core (hw/README.md "Accelerator"): a descriptor register file,
an AXI4 DRAM port, the compressed fetch unit that fills the core's tile memories from the fibers in
DRAM, the output stage and writer that put the output fibers back into DRAM, and the tile
controller (loop order mntk: an A tile of rows resident, the B tiles of all N columns streamed past
it, then the next row group). Components: :class:`Fetcher`, :class:`OutputWriter`,
:class:`TileController`, :class:`Accelerator` (the top), wired with ``wiring.connect``.

Address arithmetic of the DRAM image and the order of the fetches: :mod:`sim.memory` (one source,
shared with the cycle model and ``hw.host``).
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.axi import BURST_INCR, AXIReadSignature, AXIWriteSignature
from hw.core import Core, MemSel, lane_layout, load_layout
from hw.params import Widths, validated
from sim.memory import DESC_FIELDS, FETCH_REGIONS, WRITE_REGIONS, elem_bits, slot_lines
from sim.params import ChipParams

#: MemSel of each fetched region.
REGION_SEL = {"a_mask": MemSel.A_MASK, "a_val": MemSel.A_VAL, "a_ptr": MemSel.A_PTR, "b_mask": MemSel.B_MASK,
              "b_val": MemSel.B_VAL, "b_ptr": MemSel.B_PTR, "bias": MemSel.BIAS}


def fetch_job_layout(chip: ChipParams) -> data.StructLayout:
    """One fetch job: ``count`` elements of region ``sel`` from element ``first`` of the region
    at byte address ``base``, into the core memory from address 0; ``rebase`` subtracts the first
    element's value, rounded down to a multiple of 2^``align``, from every element (pointers of a
    tile start at the first value's place in its line); ``lines`` writes whole lines (A_VAL, B_VAL:
    the core's line-wide value memories) instead of one element per beat."""
    a = chip.mem.addr_bits
    return data.StructLayout({"sel": MemSel, "base": a, "first": 32, "count": 32, "rebase": 1, "align": 5,
                              "lines": 1})


def line_align(region: str, chip: ChipParams) -> int:
    """log2 of the elements per DRAM line of a value region (the rebase alignment of its pointers)."""
    return (chip.mem.data_bits // elem_bits(region, chip)).bit_length() - 1


def csr_layout() -> data.StructLayout:
    """A descriptor register write: register index (:data:`sim.memory.DESC_FIELDS` order), value."""
    return data.StructLayout({"addr": range(len(DESC_FIELDS)), "data": 32})


class Fetcher(wiring.Component):
    """Compressed fetch unit: one job at a time, AXI4 read bursts of whole lines, each line
    unpacked into the core's ``load`` stream one element per cycle.

    Ports: ``job`` In(stream of :func:`fetch_job_layout`), ``axi`` AXIReadSignature (master),
    ``load`` Out(stream of the core's load layout), ``busy`` Out(1) (a job is accepted and not yet
    written), ``first_val``/``last_val`` Out(32) (raw values of the last job's first and last
    element: a pointer job's bounds), counters ``bytes_read`` Out(32) per region (line bytes of
    every beat), ``dram_wait`` Out(32) (cycles busy with nothing to write: waiting for DRAM).

    Timing (hw/README.md "Accelerator"): a job accepted in cycle t issues its first AR in t + 1;
    a line is taken from R when the line before has at most one element left; the next burst's AR
    goes out in the cycle after a burst's last beat; the job is done (``busy`` low) the cycle
    after its last element was written.
    """

    def __init__(self, chip: ChipParams):
        self.chip = chip
        m = chip.mem
        self.D = m.data_bits
        super().__init__({
            "job": In(stream.Signature(fetch_job_layout(chip))),
            "axi": Out(AXIReadSignature(m.addr_bits, m.data_bits)),
            "load": Out(stream.Signature(load_layout(chip.core, chip.mem.data_bits))),
            "busy": Out(1), "first_val": Out(32), "last_val": Out(32), "clear": In(1),
            "bytes_read": Out(data.ArrayLayout(32, len(FETCH_REGIONS))), "dram_wait": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        chip, D = self.chip, self.D
        mem = chip.mem
        lb = mem.line_bytes
        sels = list(REGION_SEL.values())
        ebits = {REGION_SEL[r]: elem_bits(r, chip) for r in FETCH_REGIONS}
        job = Signal(fetch_job_layout(chip))
        line = Signal(32)        # next line (absolute line index) to request
        last_line = Signal(32)   # last line of the job
        rline = Signal(32)       # line of the next R beat
        first_line = Signal(32)
        written = Signal(32)     # elements written so far
        buf = Signal(D)
        idx = Signal(range(D + 1))  # element slot in buf
        left = Signal(range(D + 1))
        state = Signal(2)        # 0 idle, 1 AR, 2 wait for the burst's beats, 3 drain
        beats_left = Signal(9)
        ar = self.axi.ar
        r = self.axi.r

        def per_sel(fn):
            """Mux over the job's region of fn(element bits)."""
            out = None
            for s in sels:
                v = fn(ebits[s])
                out = v if out is None else Mux(job.sel == s, v, out)
            return out

        epl = per_sel(lambda eb: Const(D // eb, 32))  # elements per line
        esh = per_sel(lambda eb: Const((D // eb).bit_length() - 1, 6))
        m.d.comb += [self.busy.eq((state != 0) | (left != 0))]
        m.d.comb += self.job.ready.eq((state == 0) & (left == 0))
        with m.If(self.job.valid & self.job.ready):
            p = self.job.payload
            eb_first = Signal(32)
            eb_last = Signal(32)
            for s in sels:
                sh = (D // ebits[s]).bit_length() - 1
                with m.If(p.sel == s):
                    m.d.comb += [eb_first.eq((p.base // lb) + (p.first >> sh)),
                                 eb_last.eq((p.base // lb) + ((p.first + p.count - 1) >> sh))]
            m.d.sync += [job.eq(p), line.eq(eb_first), first_line.eq(eb_first), rline.eq(eb_first),
                         last_line.eq(eb_last), written.eq(0), state.eq(1)]
        # AR: a burst from `line` up to the next multiple of burst_beats or the job's last line.
        B = mem.burst_beats
        to_boundary = B - (line & (B - 1))
        remaining = last_line - line + 1
        nbeats = Mux(remaining < to_boundary, remaining, to_boundary)
        m.d.comb += [ar.valid.eq(state == 1), ar.payload.addr.eq(line * lb), ar.payload.len.eq(nbeats - 1),
                     ar.payload.size.eq((lb - 1).bit_length()), ar.payload.burst.eq(BURST_INCR)]
        with m.If(ar.valid & ar.ready):
            m.d.sync += [line.eq(line + nbeats), beats_left.eq(nbeats), state.eq(2)]
        # R: take a line when the current one has at most one element left (the load port is
        # always ready, so that element goes out in this cycle).
        m.d.comb += r.ready.eq((state == 2) & (left <= 1))
        slot0 = Signal(32)
        m.d.comb += slot0.eq(Mux(rline == first_line, job.first & (epl - 1), 0))
        in_line = Signal(32)  # elements of this line that belong to the job
        m.d.comb += in_line.eq(Mux(job.lines, 1, Mux(job.count - written - (left != 0) < epl - slot0,
                                                     job.count - written - (left != 0), epl - slot0)))
        with m.If(r.valid & r.ready):
            m.d.sync += [buf.eq(r.payload.data), idx.eq(slot0), left.eq(in_line), rline.eq(rline + 1),
                         beats_left.eq(beats_left - 1)]
            with m.If(beats_left == 1):
                m.d.sync += state.eq(Mux(line > last_line, 3, 1))
        with m.Elif(left != 0):
            m.d.sync += [idx.eq(idx + 1), left.eq(left - 1)]
        with m.If((state == 3) & (left <= 1)):  # the job's last element goes out in this cycle
            m.d.sync += state.eq(0)
        # Element out of buf.
        raw = Signal(32 if chip.core.chunk_bits <= 32 else chip.core.chunk_bits)
        for s in sels:
            eb = ebits[s]
            with m.If(job.sel == s):
                m.d.comb += raw.eq(buf.word_select(idx[:max(1, (D // eb - 1).bit_length())] if D // eb > 1 else 0, eb))
        ld = self.load
        is_first = written == 0
        sub = Mux(is_first, raw[:32], self.first_val) >> job.align << job.align
        m.d.comb += [ld.valid.eq(left != 0), ld.payload.sel.eq(job.sel), ld.payload.addr.eq(written),
                     ld.payload.data.eq(Mux(job.lines, buf, Mux(job.rebase, raw[:32] - sub, raw)))]
        with m.If(ld.valid & ld.ready):
            m.d.sync += [written.eq(written + 1), self.last_val.eq(raw[:32])]
            with m.If(is_first):
                m.d.sync += self.first_val.eq(raw[:32])
        # Counters.
        with m.If(r.valid & r.ready):
            for i, reg in enumerate(FETCH_REGIONS):
                with m.If(job.sel == REGION_SEL[reg]):
                    m.d.sync += self.bytes_read[i].eq(self.bytes_read[i] + lb)
        with m.If(self.busy & (left == 0)):
            m.d.sync += self.dram_wait.eq(self.dram_wait + 1)
        with m.If(self.clear):
            m.d.sync += [self.dram_wait.eq(0), self.bytes_read.as_value().eq(0)]
        return m


class OutputWriter(wiring.Component):
    """Output stage and writer. The lanes' output beats (always taken) land in the stage: per tile
    row a mask line set (bit n = the bitmask bit of column n of the tile), the packed words (word
    ``index`` of the row's tile fiber) and the count of packed words. On ``start`` the writer puts
    every row's slot into DRAM (:func:`sim.memory.slot_lines`): its count (one strobed beat), its
    mask lines (one burst), its packed-word lines (one burst of ceil(count * value_bits / D) beats,
    none when the count is 0); it does not wait for the B responses until the tile's last.

    Ports: ``lanes`` In(stream of lane_layout).array(P), ``axi`` AXIWriteSignature (master),
    ``start`` In(1), ``busy`` Out(1); ``rows`` (tile rows), ``cols`` (tile columns), ``slot0``
    (slot of tile row 0: m0 * tiles + j), ``stride`` (slots per row = tiles), ``o_mask``,
    ``o_val``, ``o_cnt`` (region bases) In; counters ``bytes_written`` Out per written region and
    ``dram_wait`` Out(32) (cycles an AW or W beat waited for ready).
    """

    def __init__(self, chip: ChipParams):
        self.chip = chip
        self.cap = cap = chip.capacity()
        p = chip.core
        self.D = D = chip.mem.data_bits
        self.Vb = chip.value_bits
        self.ml, self.vl = slot_lines(cap.cols, chip)
        a = chip.mem.addr_bits
        super().__init__({
            "lanes": In(stream.Signature(lane_layout(p, cap))).array(p.pes),
            "axi": Out(AXIWriteSignature(a, D)),
            "start": In(1), "busy": Out(1), "clear": In(1),
            "rows": In(range(cap.rows + 1)), "cols": In(range(cap.cols + 1)),
            "slot0": In(32), "stride": In(32), "o_mask": In(a), "o_val": In(a), "o_cnt": In(a),
            "bytes_written": Out(data.ArrayLayout(32, len(WRITE_REGIONS))), "dram_wait": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        chip, cap, D, Vb = self.chip, self.cap, self.D, self.Vb
        P = chip.core.pes
        lb = D // 8
        ML, VL = self.ml, self.vl
        mask_mem = Memory(shape=D, depth=cap.rows * ML, init=[])
        val_mem = Memory(shape=D, depth=cap.rows * VL, init=[])
        cnt_mem = Memory(shape=32, depth=cap.rows, init=[])
        m.submodules.mask_mem, m.submodules.val_mem, m.submodules.cnt_mem = mask_mem, val_mem, cnt_mem
        for i in range(P):
            s = self.lanes[i]
            b = s.payload
            m.d.comb += s.ready.eq(1)
            mw = mask_mem.write_port(granularity=1)
            vw = val_mem.write_port(granularity=Vb)
            cw = cnt_mem.write_port()
            go = s.valid
            vpos = b.index * Vb
            m.d.comb += [
                mw.addr.eq(b.row * ML + (b.n // D)), mw.data.eq(Mux(b.nz, (1 << D) - 1, 0)),
                mw.en.eq(Mux(go, Const(1, D) << (b.n % D), 0)),
                vw.addr.eq(b.row * VL + vpos // D), vw.data.eq(Cat(*([b.word[:Vb]] * (D // Vb)))),
                vw.en.eq(Mux(go & b.nz, Const(1, D // Vb) << ((vpos % D) // Vb), 0)),
                cw.addr.eq(b.row), cw.data.eq(b.index + b.nz), cw.en.eq(go & (b.n == self.cols - 1)),
            ]
        mr = mask_mem.read_port()
        vr = val_mem.read_port()
        cr = cnt_mem.read_port()
        aw, w, bch = self.axi.aw, self.axi.w, self.axi.b
        row = Signal(range(cap.rows + 1))
        rows, cols, stride = Signal.like(self.rows), Signal.like(self.cols), Signal.like(self.stride)
        cnt = Signal(32)
        beat = Signal(32)
        outstanding = Signal(16)
        slot = Signal(32)
        mlines = (cols + D - 1) // D
        vbeats = (cnt * Vb + D - 1) // D
        ml_rt, vl_rt = Signal(32), Signal(32)  # slot lines of this tile width (powers of two)
        for c in range(1, cap.cols + 1):
            with m.If(cols == c):
                mlc, vlc = slot_lines(c, chip)
                m.d.comb += [ml_rt.eq(mlc), vl_rt.eq(vlc)]
        m.d.comb += [bch.ready.eq(1), aw.payload.size.eq((lb - 1).bit_length()), aw.payload.burst.eq(BURST_INCR),
                     mr.addr.eq(0), vr.addr.eq(0), cr.addr.eq(row)]
        w_x = w.valid & w.ready
        with m.If(aw.valid & aw.ready & ~(bch.valid & bch.ready)):
            m.d.sync += outstanding.eq(outstanding + 1)
        with m.Elif(bch.valid & bch.ready & ~(aw.valid & aw.ready)):
            m.d.sync += outstanding.eq(outstanding - 1)
        with m.If((aw.valid & ~aw.ready) | (w.valid & ~w.ready)):
            m.d.sync += self.dram_wait.eq(self.dram_wait + 1)
        regs = {r: i for i, r in enumerate(WRITE_REGIONS)}

        def count(reg, n):
            m.d.sync += self.bytes_written[regs[reg]].eq(self.bytes_written[regs[reg]] + n)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):  # the tile's settings are latched: the controller moves on
                    m.d.sync += [row.eq(0), slot.eq(self.slot0), rows.eq(self.rows), cols.eq(self.cols),
                                 stride.eq(self.stride)]
                    m.next = "ROW"
            with m.State("ROW"):  # cr.addr = row: the count is read in this cycle
                m.d.comb += self.busy.eq(1)
                with m.If(row == rows):
                    m.next = "DRAIN"
                with m.Else():
                    m.next = "CNT_AW"
            with m.State("CNT_AW"):
                m.d.comb += [self.busy.eq(1), aw.valid.eq(1),
                             aw.payload.addr.eq(self.o_cnt + ((slot * 4) & ~(lb - 1))), aw.payload.len.eq(0)]
                with m.If(aw.ready):
                    m.d.sync += cnt.eq(cr.data)
                    m.next = "CNT_W"
            with m.State("CNT_W"):
                off = (slot * 4)[:(lb - 1).bit_length()]  # byte of the count in its line
                m.d.comb += [self.busy.eq(1), w.valid.eq(1), w.payload.data.eq(cnt << (off * 8)),
                             w.payload.strb.eq(Const(0xF, lb) << off), w.payload.last.eq(1),
                             mr.addr.eq(row * ML)]
                with m.If(w.ready):
                    count("o_cnt", 4)
                    m.next = "MASK_AW"
            with m.State("MASK_AW"):
                m.d.comb += [self.busy.eq(1), aw.valid.eq(1), aw.payload.addr.eq(self.o_mask + slot * ml_rt * lb),
                             aw.payload.len.eq(mlines - 1), mr.addr.eq(row * ML)]
                with m.If(aw.ready):
                    m.d.sync += beat.eq(0)
                    m.next = "MASK_W"
            with m.State("MASK_W"):
                m.d.comb += [self.busy.eq(1), w.valid.eq(1), w.payload.data.eq(mr.data),
                             w.payload.strb.eq((1 << lb) - 1), w.payload.last.eq(beat == mlines - 1),
                             mr.addr.eq(row * ML + beat + w_x), vr.addr.eq(row * VL)]
                with m.If(w.ready):
                    count("o_mask", lb)
                    m.d.sync += beat.eq(beat + 1)
                    with m.If(beat == mlines - 1):
                        m.next = "VAL_AW"
            with m.State("VAL_AW"):
                m.d.comb += [self.busy.eq(1), vr.addr.eq(row * VL)]
                with m.If(cnt == 0):
                    m.d.sync += [row.eq(row + 1), slot.eq(slot + stride)]
                    m.next = "ROW"
                with m.Else():
                    m.d.comb += [aw.valid.eq(1), aw.payload.addr.eq(self.o_val + slot * vl_rt * lb),
                                 aw.payload.len.eq(vbeats - 1)]
                    with m.If(aw.ready):
                        m.d.sync += beat.eq(0)
                        m.next = "VAL_W"
            with m.State("VAL_W"):
                m.d.comb += [self.busy.eq(1), w.valid.eq(1), w.payload.data.eq(vr.data),
                             w.payload.strb.eq((1 << lb) - 1), w.payload.last.eq(beat == vbeats - 1),
                             vr.addr.eq(row * VL + beat + w_x)]
                with m.If(w.ready):
                    count("o_val", lb)
                    m.d.sync += beat.eq(beat + 1)
                    with m.If(beat == vbeats - 1):
                        m.d.sync += [row.eq(row + 1), slot.eq(slot + stride)]
                        m.next = "ROW"
            with m.State("DRAIN"):  # every B response back: the tile's outputs are in DRAM
                m.d.comb += self.busy.eq(outstanding != 0)
                with m.If(outstanding == 0):
                    m.next = "IDLE"
        with m.If(self.clear):
            m.d.sync += [self.dram_wait.eq(0), self.bytes_written.as_value().eq(0)]
        return m


class TileController(wiring.Component):
    """Descriptor register file and the mntk tile loop.

    Ports: ``csr`` In(stream of :func:`csr_layout`) (always ready; registers hold until rewritten),
    ``start`` In(1) (pulse: run the layer), ``done`` Out(1) (from the end of the run to the next
    start), ``job`` Out(stream) to the fetch unit with its ``fetch_busy``/``first_val``/``last_val``;
    the core's ``core_start``/``core_done``/``core_cycles`` and its run-time shape and LIF settings;
    the writer's ``write_start``/``write_busy`` and tile/slot settings; ``clear`` Out (counters to 0 at
    start); counters ``cycles`` (start to done) and ``compute`` (core cycles summed over tiles).

    Per row group g: fetch A pointers (rebased), A masks, A words; per B tile j: (B fetched for
    every tile unless one tile holds every column) B pointers, B masks, B weights, bias; run the
    core on tile (g, j) once the writer has drained tile j - 1 from the output stage; start the
    writer on the tile and go on to the next tile's fetches (fetches and writes overlap; fetch and
    compute do not: the core's tile memories are single-buffered).
    """

    def __init__(self, chip: ChipParams):
        self.chip = chip
        cap = self.cap = chip.capacity()
        w = self.widths = Widths.of(chip.core, cap)
        a = chip.mem.addr_bits
        super().__init__({
            "csr": In(stream.Signature(csr_layout())), "start": In(1), "done": Out(1), "clear": Out(1),
            "job": Out(stream.Signature(fetch_job_layout(chip))), "fetch_busy": In(1),
            "first_val": In(32), "last_val": In(32),
            "core_start": Out(1), "core_done": In(1), "core_cycles": In(32),
            "rows": Out(range(1, cap.rows + 1)), "cols": Out(range(1, cap.cols + 1)), "chunks": Out(range(1, w.chunks + 1)),
            "threshold": Out(32), "decay_shift": Out(5), "n_mask": Out(1),
            "write_start": Out(1), "write_busy": In(1),
            "slot0": Out(32), "stride": Out(32), "o_mask": Out(a), "o_val": Out(a), "o_cnt": Out(a),
            "cycles": Out(32), "compute": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        regs = {f: Signal(32, name=f"desc_{f}") for f in DESC_FIELDS}
        m.d.comb += self.csr.ready.eq(1)
        with m.If(self.csr.valid):
            for i, f in enumerate(DESC_FIELDS):
                with m.If(self.csr.payload.addr == i):
                    m.d.sync += regs[f].eq(self.csr.payload.data)
        g_m0 = Signal(32)   # first row of the group
        j_n0 = Signal(32)   # first column of the B tile
        j = Signal(32)
        g = Signal(32)
        R = Signal(32)
        Nt = Signal(32)
        a_lo, a_hi, b_lo, b_hi = (Signal(32, name=n) for n in ("a_lo", "a_hi", "b_lo", "b_hi"))
        C = regs["chunks"]
        m.d.comb += [R.eq(Mux(regs["m"] - g_m0 < regs["tile_rows"], regs["m"] - g_m0, regs["tile_rows"])),
                     Nt.eq(Mux(regs["n"] - j_n0 < regs["tile_cols"], regs["n"] - j_n0, regs["tile_cols"])),
                     self.rows.eq(R), self.cols.eq(Nt), self.chunks.eq(C), self.threshold.eq(regs["threshold"]),
                     self.decay_shift.eq(regs["decay_shift"]), self.n_mask.eq(regs["n_mask"]),
                     self.slot0.eq(g_m0 * regs["n_tiles"] + j), self.stride.eq(regs["n_tiles"]),
                     self.o_mask.eq(regs["o_mask"]), self.o_val.eq(regs["o_val"]), self.o_cnt.eq(regs["o_cnt"])]
        running = Signal()
        with m.If(running):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        jp = self.job.payload
        b_needed = (regs["n_tiles"] != 1) | (g == 0)

        def fetch(name, sel, base, first, count, rebase, nxt, after=None, skip_if_empty=False, align=0, lines=0):
            """States ``name`` (present the job) and ``name``_WAIT (until the fetch unit is done)."""
            with m.State(name):
                m.d.comb += [running.eq(1), self.job.valid.eq(1), jp.sel.eq(sel), jp.base.eq(base),
                             jp.first.eq(first), jp.count.eq(count), jp.rebase.eq(rebase), jp.align.eq(align),
                             jp.lines.eq(lines)]
                if skip_if_empty:
                    with m.If(count == 0):
                        m.d.comb += self.job.valid.eq(0)
                        m.next = nxt
                    with m.Elif(self.job.ready):
                        m.next = name + "_WAIT"
                else:
                    with m.If(self.job.ready):
                        m.next = name + "_WAIT"
            with m.State(name + "_WAIT"):
                m.d.comb += running.eq(1)
                with m.If(~self.fetch_busy):
                    if after:
                        after()
                    m.next = nxt

        with m.FSM():
            for st in ("IDLE", "DONE"):
                with m.State(st):
                    if st == "DONE":
                        m.d.comb += self.done.eq(1)
                    with m.If(self.start):
                        m.d.comb += self.clear.eq(1)
                        m.d.sync += [g_m0.eq(0), g.eq(0), j.eq(0), j_n0.eq(0), self.cycles.eq(0), self.compute.eq(0)]
                        m.next = "A_PTR"
            fetch("A_PTR", MemSel.A_PTR, regs["a_ptr"], g_m0, R + 1, 1, "A_MASK", align=line_align("a_val", self.chip),
                  after=lambda: m.d.sync.__iadd__([a_lo.eq(self.first_val), a_hi.eq(self.last_val)]))
            fetch("A_MASK", MemSel.A_MASK, regs["a_mask"], g_m0 * C, R * C, 0, "A_VAL")
            fetch("A_VAL", MemSel.A_VAL, regs["a_val"], a_lo, a_hi - a_lo, 0, "B_TILE", skip_if_empty=True, lines=1)
            with m.State("B_TILE"):
                m.d.comb += running.eq(1)
                m.next = "B_PTR"
                with m.If(~b_needed):
                    m.next = "RUN"
            fetch("B_PTR", MemSel.B_PTR, regs["b_ptr"], j_n0, Nt + 1, 1, "B_MASK", align=line_align("b_val", self.chip),
                  after=lambda: m.d.sync.__iadd__([b_lo.eq(self.first_val), b_hi.eq(self.last_val)]))
            fetch("B_MASK", MemSel.B_MASK, regs["b_mask"], j_n0 * C, Nt * C, 0, "B_VAL")
            fetch("B_VAL", MemSel.B_VAL, regs["b_val"], b_lo, b_hi - b_lo, 0, "BIAS", skip_if_empty=True, lines=1)
            fetch("BIAS", MemSel.BIAS, regs["bias"], j_n0, Nt, 0, "RUN")
            with m.State("RUN"):  # the output stage is free once the writer has drained the last tile
                m.d.comb += running.eq(1)
                with m.If(~self.write_busy):
                    m.d.comb += self.core_start.eq(1)
                    m.next = "RUN_WAIT"
            with m.State("RUN_WAIT"):
                m.d.comb += running.eq(1)
                with m.If(self.core_done):
                    m.d.sync += self.compute.eq(self.compute + self.core_cycles)
                    m.next = "WRITE"
            with m.State("WRITE"):  # the writer drains the stage while the next tile is fetched
                m.d.comb += [running.eq(1), self.write_start.eq(1)]
                with m.If(j + 1 < regs["n_tiles"]):
                    m.d.sync += [j.eq(j + 1), j_n0.eq(j_n0 + regs["tile_cols"])]
                    m.next = "B_TILE"
                with m.Elif(g_m0 + regs["tile_rows"] < regs["m"]):
                    m.d.sync += [j.eq(0), j_n0.eq(0), g.eq(g + 1), g_m0.eq(g_m0 + regs["tile_rows"])]
                    m.next = "A_PTR"
                with m.Else():
                    m.next = "FINISH"
            with m.State("FINISH"):  # every output in DRAM
                m.d.comb += running.eq(1)
                with m.If(~self.write_busy):
                    m.next = "DONE"
        return m


class Accelerator(wiring.Component):
    """The LoAS accelerator for one build (hw/README.md "Accelerator").

    Parameters
    ----------
    chip : ChipParams   the core, tile capacities, buffer, DRAM port (sim/params.py)

    Ports
    -----
    csr : In(stream of (addr, data))   descriptor register writes (always ready)
    start : In(1), done : Out(1)       run the layer the descriptor names / finished
    rd : AXIReadSignature, wr : AXIWriteSignature   the DRAM port (AXI4 masters)
    cycles, compute, fetch_wait, write_wait : Out(32)   counters (start to done; core cycles;
                                        cycles the fetch unit / writer waited for DRAM)
    bytes_read : Out(array of 32) per FETCH_REGIONS, bytes_written : Out(array) per WRITE_REGIONS
    words_loaded : Out(32)              buffer (tile memory) writes by the fetch unit

    Raises
    ------
    TypeError when chip is not a ChipParams.
    """

    @validated
    def __init__(self, chip: ChipParams = ChipParams()):
        if not isinstance(chip, ChipParams):
            raise TypeError(f"Accelerator takes a ChipParams, got {type(chip).__name__}")
        self.chip = chip
        a, D = chip.mem.addr_bits, chip.mem.data_bits
        super().__init__({
            "csr": In(stream.Signature(csr_layout())), "start": In(1), "done": Out(1),
            "rd": Out(AXIReadSignature(a, D)), "wr": Out(AXIWriteSignature(a, D)),
            "cycles": Out(32), "compute": Out(32), "fetch_wait": Out(32), "write_wait": Out(32),
            "bytes_read": Out(data.ArrayLayout(32, len(FETCH_REGIONS))),
            "bytes_written": Out(data.ArrayLayout(32, len(WRITE_REGIONS))), "words_loaded": Out(32),
        })
        self.parts = {"ctrl": TileController(chip), "fetch": Fetcher(chip), "core": Core(chip.core, chip.capacity(), line_bits=chip.mem.data_bits),
                      "writer": OutputWriter(chip)}

    def elaborate(self, platform):
        m = Module()
        for name, part in self.parts.items():
            m.submodules[name] = part
        ctrl, fetch, core, wr = (self.parts[k] for k in ("ctrl", "fetch", "core", "writer"))
        wiring.connect(m, wiring.flipped(self.csr), ctrl.csr)
        wiring.connect(m, ctrl.job, fetch.job)
        wiring.connect(m, fetch.load, core.load)
        wiring.connect(m, fetch.axi, wiring.flipped(self.rd))
        wiring.connect(m, wr.axi, wiring.flipped(self.wr))
        for i in range(self.chip.core.pes):
            wiring.connect(m, core.out[i], wr.lanes[i])
        m.d.comb += [
            ctrl.start.eq(self.start), self.done.eq(ctrl.done),
            ctrl.fetch_busy.eq(fetch.busy), ctrl.first_val.eq(fetch.first_val), ctrl.last_val.eq(fetch.last_val),
            fetch.clear.eq(ctrl.clear), wr.clear.eq(ctrl.clear),
            core.start.eq(ctrl.core_start), ctrl.core_done.eq(core.done), ctrl.core_cycles.eq(core.cycles),
            core.rows.eq(ctrl.rows), core.cols.eq(ctrl.cols), core.chunks.eq(ctrl.chunks),
            core.threshold.eq(ctrl.threshold), core.decay_shift.eq(ctrl.decay_shift), core.n_mask.eq(ctrl.n_mask),
            wr.start.eq(ctrl.write_start), ctrl.write_busy.eq(wr.busy),
            wr.rows.eq(ctrl.rows), wr.cols.eq(ctrl.cols), wr.slot0.eq(ctrl.slot0), wr.stride.eq(ctrl.stride),
            wr.o_mask.eq(ctrl.o_mask), wr.o_val.eq(ctrl.o_val), wr.o_cnt.eq(ctrl.o_cnt),
            self.cycles.eq(ctrl.cycles), self.compute.eq(ctrl.compute), self.fetch_wait.eq(fetch.dram_wait),
            self.write_wait.eq(wr.dram_wait), self.bytes_read.eq(fetch.bytes_read),
            self.bytes_written.eq(wr.bytes_written),
        ]
        loaded = Signal(32)
        with m.If(ctrl.clear):
            m.d.sync += loaded.eq(0)
        with m.Elif(fetch.load.valid & fetch.load.ready):
            m.d.sync += loaded.eq(loaded + 1)
        m.d.comb += self.words_loaded.eq(loaded)
        return m
