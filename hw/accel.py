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
from hw.core import Core, LaneCounters, MemSel, lane_layout, load_layout
from hw.params import Widths, validated
from sim.memory import DESC_FIELDS, FETCH_REGIONS, READ_REGIONS, WRITE_REGIONS, elem_bits, slot_lines
from sim.params import ChipParams

#: The accelerator's scalar counters (Out(32) each), and its counter arrays (32 bits per element):
#: per region of the named regions, or one per lane (None).
COUNTERS = ("cycles", "compute", "fetch_wait", "write_wait", "words_loaded", "walk_wait", "imbalance")
ARRAYS = {"bytes_read": FETCH_REGIONS, "bytes_written": WRITE_REGIONS, "buffer_writes": FETCH_REGIONS,
          "buffer_reads": READ_REGIONS, "lane_busy": None}

#: MemSel of each fetched region.
REGION_SEL = {"a_mask": MemSel.A_MASK, "a_val": MemSel.A_VAL, "a_ptr": MemSel.A_PTR, "b_mask": MemSel.B_MASK,
              "b_val": MemSel.B_VAL, "b_ptr": MemSel.B_PTR, "bias": MemSel.BIAS}


def fetch_job_layout(chip: ChipParams) -> data.StructLayout:
    """One fetch job: ``count`` elements of region ``sel`` from element ``first`` of the region
    at byte address ``base``, into the core memory from address 0; ``rebase`` subtracts the first
    element's value, rounded down to a multiple of 2^``align``, from every element (pointers of a
    tile start at the first value's place in its line); ``lines`` writes whole lines (A_VAL, B_VAL:
    the core's line-wide value memories) instead of one element per beat; ``bank`` the tile
    memories' bank it fills."""
    a = chip.mem.addr_bits
    return data.StructLayout({"sel": MemSel, "base": a, "first": 32, "count": 32, "rebase": 1, "align": 5,
                              "lines": 1, "bank": 1})


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

    def __init__(self, chip: ChipParams, bank_depth: dict):
        self.chip, self.bank_depth = chip, bank_depth  # memory name -> words per bank (CoreMemories)
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
        bank_base = Const(0, 32)
        for region, sel in REGION_SEL.items():
            bank_base = Mux(job.sel == sel, self.bank_depth[region], bank_base)
        m.d.comb += [ld.valid.eq(left != 0), ld.payload.sel.eq(job.sel),
                     ld.payload.addr.eq(written + Mux(job.bank, bank_base, 0)),
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
    """Output stage (two tiles) and writer. The lanes' output beats (always taken) land in stage
    bank ``lane_bank`` (the running tile's): per tile row a mask line set (bit n = the bitmask bit of
    column n of the tile), the packed words (word ``index`` of the row's tile fiber) and the count of
    packed words. On ``start`` the writer latches the tile's settings and its bank ``bank`` and puts
    every row's slot into DRAM (:func:`sim.memory.slot_lines`): its count (one strobed beat), its
    mask lines (one burst), its packed-word lines (one burst of ceil(count * value_bits / D) beats,
    none when the count is 0). It is done with the tile (``busy`` low, the bank free for the lanes)
    once the last row's W beats are out; the B responses are counted (``pending``) and awaited only
    by the tile controller before DONE.

    Ports: ``lanes`` In(stream of lane_layout).array(P), ``lane_bank`` In(1) and ``lane_cols`` In
    (the running tile's stage bank and columns: a lane writes its row with the beat of column
    ``lane_cols`` - 1); ``axi`` AXIWriteSignature (master), ``start`` In(1) (taken while ``busy`` is
    low), ``busy`` Out(1) (a tile being written), ``pending`` Out(1) (B responses outstanding);
    the tile to write, latched at ``start``: ``bank`` (its stage bank), ``rows`` (tile rows),
    ``cols`` (tile columns), ``slot0`` (slot of tile row 0: m0 * tiles + j), ``stride`` (slots per
    row = tiles), ``o_mask``, ``o_val``, ``o_cnt`` (region bases) In; counters ``bytes_written`` Out
    per written region and ``dram_wait`` Out(32) (cycles an AW or W beat waited for ready).
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
            "lane_bank": In(1), "lane_cols": In(range(cap.cols + 1)),
            "start": In(1), "busy": Out(1), "pending": Out(1), "clear": In(1),
            "bank": In(1), "rows": In(range(cap.rows + 1)), "cols": In(range(cap.cols + 1)),
            "slot0": In(32), "stride": In(32), "o_mask": In(a), "o_val": In(a), "o_cnt": In(a),
            "bytes_written": Out(data.ArrayLayout(32, len(WRITE_REGIONS))), "dram_wait": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        chip, cap, D, Vb = self.chip, self.cap, self.D, self.Vb
        P = chip.core.pes
        lb = D // 8
        ML, VL = self.ml, self.vl
        # The stage holds one word per tile row: its mask bits (bit n = column n) and its packed
        # words, padded to whole DRAM lines; beat k of a burst is line k of the word. Each lane
        # assembles its row in registers (a lane's beats come in n order, n = 0 first) and writes
        # it whole with the row's last beat: one plain write per row and lane on each of the P
        # write ports, where a masked write per beat (P x 512 one-bit enables) kept yosys' memory
        # passes busy for hours. Two banks (bank 1 from word cap.rows): the lanes fill one with the
        # running tile while the writer empties the other, so a run need not wait for the write of
        # the tile before it.
        mrow_bits, vrow_bits = ML * D, VL * D
        mask_mem = Memory(shape=mrow_bits, depth=2 * cap.rows, init=[])
        val_mem = Memory(shape=vrow_bits, depth=2 * cap.rows, init=[])
        cnt_mem = Memory(shape=32, depth=2 * cap.rows, init=[])
        lane_base = Mux(self.lane_bank, cap.rows, 0)
        m.submodules.mask_mem, m.submodules.val_mem, m.submodules.cnt_mem = mask_mem, val_mem, cnt_mem
        for i in range(P):
            s = self.lanes[i]
            b = s.payload
            m.d.comb += s.ready.eq(1)
            mw, vw, cw = mask_mem.write_port(), val_mem.write_port(), cnt_mem.write_port()
            go = s.valid
            macc, vacc = Signal(cap.cols, name=f"mrow{i}"), Signal(cap.cols * Vb, name=f"vrow{i}")
            mbit, vbits = Signal(cap.cols, name=f"mbit{i}"), Signal(cap.cols * Vb, name=f"vbits{i}")
            mrow, vrow = Signal(cap.cols, name=f"mnext{i}"), Signal(cap.cols * Vb, name=f"vnext{i}")
            m.d.comb += [
                mbit.eq(b.nz << b.n), vbits.eq(Mux(b.nz, b.word[:Vb], 0) << (b.index * Vb)),
                mrow.eq(Mux(b.n == 0, 0, macc) | mbit), vrow.eq(Mux(b.n == 0, 0, vacc) | vbits),
            ]
            with m.If(go):
                m.d.sync += [macc.eq(mrow), vacc.eq(vrow)]
            last = go & (b.n == self.lane_cols - 1)
            m.d.comb += [
                mw.addr.eq(lane_base + b.row), mw.data.eq(mrow), mw.en.eq(last),
                vw.addr.eq(lane_base + b.row), vw.data.eq(vrow), vw.en.eq(last),
                cw.addr.eq(lane_base + b.row), cw.data.eq(b.index + b.nz), cw.en.eq(last),
            ]
        mr = mask_mem.read_port()
        vr = val_mem.read_port()
        cr = cnt_mem.read_port()
        aw, w, bch = self.axi.aw, self.axi.w, self.axi.b
        row = Signal(range(cap.rows + 1))
        rows, cols, stride = Signal.like(self.rows), Signal.like(self.cols), Signal.like(self.stride)
        bank = Signal()  # stage bank of the tile being written
        srow = Signal(range(2 * cap.rows + 1))  # the row's word in the stage
        m.d.comb += srow.eq(Mux(bank, cap.rows, 0) + row)
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
        m.d.comb += [bch.ready.eq(1), mr.addr.eq(0), vr.addr.eq(0), cr.addr.eq(srow), self.pending.eq(outstanding != 0)]
        # size and burst are driven with the address, not alone: a constant-only slice becomes an
        # ``always @*`` block without inputs, which Verilator never evaluates.
        aw_const = [aw.payload.size.eq((lb - 1).bit_length()), aw.payload.burst.eq(BURST_INCR)]
        with m.If(aw.valid & aw.ready & ~(bch.valid & bch.ready)):
            m.d.sync += outstanding.eq(outstanding + 1)
        with m.Elif(bch.valid & bch.ready & ~(aw.valid & aw.ready)):
            m.d.sync += outstanding.eq(outstanding - 1)
        with m.If((aw.valid & ~aw.ready) | (w.valid & ~w.ready)):
            m.d.sync += self.dram_wait.eq(self.dram_wait + 1)
        regs = {r: i for i, r in enumerate(WRITE_REGIONS)}

        def count(reg, n):
            m.d.sync += self.bytes_written[regs[reg]].eq(self.bytes_written[regs[reg]] + n)

        # The mask and the packed-word bursts of a row: one AW, then n beats, beat k line k of the
        # row's stage word. The read port is synchronous: the cycle before the AW (and the AW
        # itself) reads the row, whose word then stays on the port for the burst.
        def burst_aw(addr, n, port, then):
            m.d.comb += [self.busy.eq(1), aw.valid.eq(1), *aw_const, aw.payload.addr.eq(addr),
                         aw.payload.len.eq(n - 1), port.addr.eq(srow)]
            with m.If(aw.ready):
                m.d.sync += beat.eq(0)
                m.next = then

        def burst_w(n, port, region, last):
            m.d.comb += [self.busy.eq(1), w.valid.eq(1), w.payload.data.eq(port.data.word_select(beat, D)),
                         w.payload.strb.eq((1 << lb) - 1), w.payload.last.eq(beat == n - 1),
                         port.addr.eq(srow)]
            with m.If(w.ready):
                count(region, lb)
                m.d.sync += beat.eq(beat + 1)
                with m.If(beat == n - 1):
                    last()

        def next_row():
            m.d.sync += [row.eq(row + 1), slot.eq(slot + stride)]
            m.next = "ROW"

        def to_val_aw():
            m.next = "VAL_AW"

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):  # the tile's settings are latched: the controller moves on
                    m.d.sync += [row.eq(0), slot.eq(self.slot0), rows.eq(self.rows), cols.eq(self.cols),
                                 stride.eq(self.stride), bank.eq(self.bank)]
                    m.next = "ROW"
            with m.State("ROW"):  # cr.addr = the row's word: the count is read in this cycle
                m.d.comb += self.busy.eq(1)
                with m.If(row == rows):  # every W beat is out: the bank is free, B responses may be due
                    m.next = "IDLE"
                with m.Else():
                    m.next = "CNT_AW"
            with m.State("CNT_AW"):
                m.d.comb += [self.busy.eq(1), aw.valid.eq(1), *aw_const,
                             aw.payload.addr.eq(self.o_cnt + ((slot * 4) & ~(lb - 1))), aw.payload.len.eq(0)]
                with m.If(aw.ready):
                    m.d.sync += cnt.eq(cr.data)
                    m.next = "CNT_W"
            with m.State("CNT_W"):
                off = (slot * 4)[:(lb - 1).bit_length()]  # byte of the count in its line
                m.d.comb += [self.busy.eq(1), w.valid.eq(1), w.payload.data.eq(cnt << (off * 8)),
                             w.payload.strb.eq(Const(0xF, lb) << off), w.payload.last.eq(1),
                             mr.addr.eq(srow)]
                with m.If(w.ready):
                    count("o_cnt", 4)
                    m.next = "MASK_AW"
            with m.State("MASK_AW"):
                burst_aw(self.o_mask + slot * ml_rt * lb, mlines, mr, "MASK_W")
            with m.State("MASK_W"):
                burst_w(mlines, mr, "o_mask", to_val_aw)
            with m.State("VAL_AW"):
                with m.If(cnt == 0):  # a silent row: no packed words
                    m.d.comb += self.busy.eq(1)
                    next_row()
                with m.Else():
                    burst_aw(self.o_val + slot * vl_rt * lb, vbeats, vr, "VAL_W")
            with m.State("VAL_W"):
                burst_w(vbeats, vr, "o_val", next_row)
        with m.If(self.clear):
            m.d.sync += [self.dram_wait.eq(0), self.bytes_written.as_value().eq(0)]
        return m


class TileController(wiring.Component):
    """Descriptor register file and the mntk tile loop: fetch, run and write sequencers.

    Ports: ``csr`` In(stream of :func:`csr_layout`) (always ready; registers hold until rewritten),
    ``start`` In(1) (pulse: run the layer), ``done`` Out(1) (from the end of the run to the next
    start), ``job`` Out(stream) to the fetch unit with its ``fetch_busy``/``first_val``/``last_val``;
    the core's ``core_start``/``core_done``/``core_cycles``, ``a_bank``/``b_bank`` and its run-time
    shape and LIF settings (``rows``, ``cols``: the running tile's; ``stage_bank`` the output stage
    bank its lanes write); the writer's ``write_start``/``write_busy``/``write_pending`` and the
    settings of the tile it is to write (``write_bank``, ``write_rows``, ``write_cols``, ``slot0``,
    ``stride``, region bases); ``clear`` Out (counters to 0 at start); counters ``cycles`` (start
    to done) and ``compute`` (core cycles summed over tiles).

    Tiles k = (g, j) in mntk order, or nmtk with the descriptor's ``nmtk`` bit (then B is the
    resident operand: fetched at g = 0 into B bank j mod 2, A with every tile into A bank k mod 2,
    once when one tile holds every row). Fetch sequencer (mntk), per tile: once run k - 1 has started (so the
    banks tile k fills are free), at j = 0 the A pointers (rebased), chunks and words of row group
    g into A bank g mod 2; then (unless one B tile holds every column and this is not the first
    tile) the B pointers, chunks, weights and bias into B bank (B tiles fetched so far) mod 2.
    Run sequencer: tile k runs, its outputs into stage bank k mod 2, once it is fetched, run k - 1
    is done and the writer has finished tile k - 2 (the last user of that bank; it may still be
    writing tile k - 1). Write sequencer: the writer starts on tile k (bank k mod 2) once run k is
    done and the writer has finished tile k - 1, in the cycle the run's done is seen if the writer
    is idle then. DONE once every tile is written and every B response is back.
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
            "core_start": Out(1), "core_done": In(1), "core_cycles": In(32), "a_bank": Out(1), "b_bank": Out(1),
            "rows": Out(range(1, cap.rows + 1)), "cols": Out(range(1, cap.cols + 1)), "chunks": Out(range(1, w.chunks + 1)),
            "threshold": Out(32), "decay_shift": Out(5), "n_mask": Out(1),
            "stage_bank": Out(1), "write_start": Out(1), "write_busy": In(1), "write_pending": In(1),
            "write_bank": Out(1), "write_rows": Out(range(1, cap.rows + 1)), "write_cols": Out(range(1, cap.cols + 1)),
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
        C = regs["chunks"]

        def tile_counters(prefix):
            """(k, g, j, m0, n0, R, Nt, last) of a sequencer's current tile."""
            k, g, j, m0, n0 = (Signal(32, name=f"{prefix}_{n}") for n in ("k", "g", "j", "m0", "n0"))
            R, Nt, last = Signal(32, name=f"{prefix}_R"), Signal(32, name=f"{prefix}_Nt"), Signal(name=f"{prefix}_last")
            m.d.comb += [R.eq(Mux(regs["m"] - m0 < regs["tile_rows"], regs["m"] - m0, regs["tile_rows"])),
                         Nt.eq(Mux(regs["n"] - n0 < regs["tile_cols"], regs["n"] - n0, regs["tile_cols"])),
                         last.eq((j + 1 >= regs["n_tiles"]) & (m0 + regs["tile_rows"] >= regs["m"]))]
            return k, g, j, m0, n0, R, Nt, last

        nmtk = regs["nmtk"][0]

        def advance(k, g, j, m0, n0):
            next_j = [j.eq(j + 1), n0.eq(n0 + regs["tile_cols"])]
            next_g = [g.eq(g + 1), m0.eq(m0 + regs["tile_rows"])]
            with m.If(~nmtk):  # mntk: the B tiles j of row group g, then the next row group
                with m.If(j + 1 < regs["n_tiles"]):
                    m.d.sync += next_j
                with m.Else():
                    m.d.sync += [j.eq(0), n0.eq(0), *next_g]
            with m.Else():  # nmtk: the row groups g of B tile j, then the next B tile
                with m.If(m0 + regs["tile_rows"] < regs["m"]):
                    m.d.sync += next_g
                with m.Else():
                    m.d.sync += [g.eq(0), m0.eq(0), *next_j]
            m.d.sync += k.eq(k + 1)

        fk, fg, fj, f_m0, f_n0, fR, fNt, f_last = tile_counters("f")
        rk, rg, rj, r_m0, r_n0, rR, rNt, r_last = tile_counters("r")
        wk, wg, wj, w_m0, w_n0, wR, wNt, _ = tile_counters("w")  # the writer's next tile
        fetched = Signal(32)   # tiles whose fetch is complete
        started = Signal(32)   # runs started
        b_fetches = Signal(32)  # B tiles fetched (their bank parity)
        a_lo, a_hi, b_lo, b_hi = (Signal(32, name=n) for n in ("a_lo", "a_hi", "b_lo", "b_hi"))
        single_b = regs["n_tiles"] == 1
        single_a = regs["m"] <= regs["tile_rows"]
        # The banks of a tile's operands. The resident operand (mntk: A, nmtk: B) changes bank with
        # its tile index (g, j), the streamed one with every tile, unless one tile holds all of it.
        run_a_bank = Mux(nmtk, Mux(single_a, 0, rk[0]), rg[0])
        run_b_bank = Mux(nmtk, rj[0], Mux(single_b, 0, rk[0]))
        m.d.comb += [self.rows.eq(rR), self.cols.eq(rNt), self.chunks.eq(C), self.threshold.eq(regs["threshold"]),
                     self.decay_shift.eq(regs["decay_shift"]), self.n_mask.eq(regs["n_mask"]),
                     self.a_bank.eq(run_a_bank), self.b_bank.eq(run_b_bank),
                     self.stage_bank.eq(rk[0]), self.write_bank.eq(wk[0]), self.write_rows.eq(wR),
                     self.write_cols.eq(wNt), self.slot0.eq(w_m0 * regs["n_tiles"] + wj), self.stride.eq(regs["n_tiles"]),
                     self.o_mask.eq(regs["o_mask"]), self.o_val.eq(regs["o_val"]), self.o_cnt.eq(regs["o_cnt"])]
        running = Signal()
        with m.If(running):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        go = Signal()  # the start cycle: both sequencers begin
        jp = self.job.payload

        def fetch(name, sel, base, first, count, rebase, nxt, bank, after=None, skip_if_empty=False, align=0, lines=0):
            """States ``name`` (present the job) and ``name``_WAIT (until the fetch unit is done)."""
            with m.State(name):
                m.d.comb += [self.job.valid.eq(1), jp.sel.eq(sel), jp.base.eq(base), jp.first.eq(first),
                             jp.count.eq(count), jp.rebase.eq(rebase), jp.align.eq(align), jp.lines.eq(lines),
                             jp.bank.eq(bank)]
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
                with m.If(~self.fetch_busy):
                    if after:
                        after()
                    m.next = nxt

        chip = self.chip
        with m.FSM(name="fetch"):
            with m.State("F_IDLE"):
                with m.If(go):
                    m.next = "F_TILE"
            with m.State("F_TILE"):  # the banks of tile fk are free once run fk - 1 has started
                with m.If(started >= fk):
                    m.next = "A_PTR"
                    with m.If(Mux(nmtk, single_a & (fk != 0), fj != 0)):
                        m.next = "B_TILE"
            a_bank = Mux(nmtk, fk[0], fg[0])
            fetch("A_PTR", MemSel.A_PTR, regs["a_ptr"], f_m0, fR + 1, 1, "A_MASK", a_bank, align=line_align("a_val", chip),
                  after=lambda: m.d.sync.__iadd__([a_lo.eq(self.first_val), a_hi.eq(self.last_val)]))
            fetch("A_MASK", MemSel.A_MASK, regs["a_mask"], f_m0 * C, fR * C, 0, "A_VAL", a_bank)
            fetch("A_VAL", MemSel.A_VAL, regs["a_val"], a_lo, a_hi - a_lo, 0, "B_TILE", a_bank, skip_if_empty=True,
                  lines=1)
            with m.State("B_TILE"):
                m.next = "B_PTR"
                with m.If(Mux(nmtk, fg != 0, single_b & (fk != 0))):
                    m.next = "F_DONE"
            b_bank = b_fetches[0]
            fetch("B_PTR", MemSel.B_PTR, regs["b_ptr"], f_n0, fNt + 1, 1, "B_MASK", b_bank, align=line_align("b_val", chip),
                  after=lambda: m.d.sync.__iadd__([b_lo.eq(self.first_val), b_hi.eq(self.last_val)]))
            fetch("B_MASK", MemSel.B_MASK, regs["b_mask"], f_n0 * C, fNt * C, 0, "B_VAL", b_bank)
            fetch("B_VAL", MemSel.B_VAL, regs["b_val"], b_lo, b_hi - b_lo, 0, "BIAS", b_bank, skip_if_empty=True, lines=1)
            fetch("BIAS", MemSel.BIAS, regs["bias"], f_n0, fNt, 0, "F_DONE", b_bank,
                  after=lambda: m.d.sync.__iadd__(b_fetches.eq(b_fetches + 1)))
            with m.State("F_DONE"):
                m.d.sync += fetched.eq(fetched + 1)
                advance(fk, fg, fj, f_m0, f_n0)
                m.next = "F_TILE"
                with m.If(f_last):
                    m.next = "F_IDLE"
        # Tiles the writer has finished: those it started, less the one it is writing.
        written = Signal(32)
        m.d.comb += written.eq(wk - self.write_busy)
        run_done = Signal()  # the run sequencer sees the core done (rk advances)
        # Write sequencer: rk counts the runs done, so tile wk's run is done when rk > wk (or in this
        # cycle); the writer takes start only while idle.
        with m.If(~self.write_busy & ((rk > wk) | run_done)):
            m.d.comb += self.write_start.eq(1)
            advance(wk, wg, wj, w_m0, w_n0)
        with m.FSM(name="run"):
            for st in ("IDLE", "DONE"):
                with m.State(st):
                    if st == "DONE":
                        m.d.comb += self.done.eq(1)
                    with m.If(self.start):
                        m.d.comb += [self.clear.eq(1), go.eq(1)]
                        m.d.sync += [self.cycles.eq(0), self.compute.eq(0), fetched.eq(0), started.eq(0),
                                     b_fetches.eq(0)]
                        for sig in (fk, fg, fj, f_m0, f_n0, rk, rg, rj, r_m0, r_n0, wk, wg, wj, w_m0, w_n0):
                            m.d.sync += sig.eq(0)
                        m.next = "R_WAIT"
            with m.State("R_WAIT"):  # tile rk fetched and its stage bank free (tile rk - 2 written)
                m.d.comb += running.eq(1)
                with m.If((fetched > rk) & (written + 1 >= rk)):
                    m.d.comb += self.core_start.eq(1)
                    m.d.sync += started.eq(started + 1)
                    m.next = "R_RUN"
            with m.State("R_RUN"):
                m.d.comb += running.eq(1)
                with m.If(self.core_done):
                    m.d.comb += run_done.eq(1)
                    m.d.sync += self.compute.eq(self.compute + self.core_cycles)
                    advance(rk, rg, rj, r_m0, r_n0)
                    m.next = "R_WAIT"
                    with m.If(r_last):
                        m.next = "R_FINISH"
            with m.State("R_FINISH"):  # every tile written and every B response back: the outputs are in DRAM
                m.d.comb += running.eq(1)
                with m.If((wk == rk) & ~self.write_busy & ~self.write_pending):
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
    buffer_writes : Out(array of 32) per FETCH_REGIONS   the same writes per region (elements; lines
                                        of the line-wide A_VAL / B_VAL)
    buffer_reads : Out(array of 32) per READ_REGIONS     the lanes' element reads (per job a pointer
                                        of each side and a bias, per match a weight and a spike word)
    lane_busy : Out(array of 32) per lane, walk_wait, imbalance : Out(32)   where the lanes' cycles
                                        go, summed over the tiles' runs (:class:`hw.core.LaneCounters`)

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
            "buffer_writes": Out(data.ArrayLayout(32, len(FETCH_REGIONS))),
            "buffer_reads": Out(data.ArrayLayout(32, len(READ_REGIONS))),
            "lane_busy": Out(data.ArrayLayout(32, chip.core.pes)), "walk_wait": Out(32), "imbalance": Out(32),
        })
        core = Core(chip.core, chip.capacity(), line_bits=chip.mem.data_bits, double=True)
        self.parts = {"ctrl": TileController(chip), "fetch": Fetcher(chip, core.parts["mems"].bank_depth), "core": core,
                      "writer": OutputWriter(chip), "lanes": LaneCounters(chip.core.pes)}

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
        lc = self.parts["lanes"]
        wiring.connect(m, core.activity, lc.activity)
        m.d.comb += [lc.clear.eq(ctrl.clear), self.lane_busy.eq(lc.busy), self.walk_wait.eq(lc.walk_wait),
                     self.imbalance.eq(lc.imbalance)]
        for i in range(self.chip.core.pes):
            wiring.connect(m, core.out[i], wr.lanes[i])
        m.d.comb += [
            ctrl.start.eq(self.start), self.done.eq(ctrl.done),
            ctrl.fetch_busy.eq(fetch.busy), ctrl.first_val.eq(fetch.first_val), ctrl.last_val.eq(fetch.last_val),
            fetch.clear.eq(ctrl.clear), wr.clear.eq(ctrl.clear),
            core.start.eq(ctrl.core_start), ctrl.core_done.eq(core.done), ctrl.core_cycles.eq(core.cycles),
            core.a_bank.eq(ctrl.a_bank), core.b_bank.eq(ctrl.b_bank),
            core.rows.eq(ctrl.rows), core.cols.eq(ctrl.cols), core.chunks.eq(ctrl.chunks),
            core.threshold.eq(ctrl.threshold), core.decay_shift.eq(ctrl.decay_shift), core.n_mask.eq(ctrl.n_mask),
            wr.start.eq(ctrl.write_start), ctrl.write_busy.eq(wr.busy), ctrl.write_pending.eq(wr.pending),
            wr.lane_bank.eq(ctrl.stage_bank), wr.lane_cols.eq(ctrl.cols), wr.bank.eq(ctrl.write_bank),
            wr.rows.eq(ctrl.write_rows), wr.cols.eq(ctrl.write_cols), wr.slot0.eq(ctrl.slot0), wr.stride.eq(ctrl.stride),
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
        # Buffer accesses: the fetch unit's writes by region, and the lanes' reads, tapped at the
        # transfers that consume them: a job accepted by the TPPE (the job former read its A and B
        # pointers and bias), a match pushed (the F side read its weight), a correction taken (the
        # L side read its spike word).
        ld = fetch.load
        lanes = [core.parts[f"lane{i}"] for i in range(self.chip.core.pes)]
        tppes = [lane.parts["tppe"] for lane in lanes]

        def transfers(ports):
            return sum((s.valid & s.ready for s in ports), Const(0, 1))

        jobs = transfers(lane.job for lane in lanes)
        matches = transfers(t.parts["f"].push for t in tppes)
        pops = transfers(t.parts["l"].corr for t in tppes)
        reads = {"a_val": pops, "a_ptr": jobs, "b_val": matches, "b_ptr": jobs, "bias": jobs}
        with m.If(ctrl.clear):
            m.d.sync += [self.buffer_writes.as_value().eq(0), self.buffer_reads.as_value().eq(0)]
        with m.Else():
            for i, r in enumerate(FETCH_REGIONS):
                with m.If(ld.valid & ld.ready & (ld.payload.sel == REGION_SEL[r])):
                    m.d.sync += self.buffer_writes[i].eq(self.buffer_writes[i] + 1)
            for i, r in enumerate(READ_REGIONS):
                m.d.sync += self.buffer_reads[i].eq(self.buffer_reads[i] + reads[r])
        return m
