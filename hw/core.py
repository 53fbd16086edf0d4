"""The LoAS core: P TPPEs sharing the B fiber, an mntk scheduler, P-LIF and output compressors per
TPPE, memories the testbench loads, start/done and a cycle counter (hw/README.md "Core").

Memory map of the load port (``ld_sel``):
0 A bitmask chunks (row r chunk c at r*C + c)   1 A packed spike words (fiber order)
2 A row pointers (M + 1)                         3 B bitmask chunks (column n chunk c at n*C + c)
4 B packed weights (fiber order)                 5 B column pointers (N + 1)
6 bias (N)
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Signal, signed, unsigned
from amaranth.lib import wiring, data, stream
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.compress import OutputCompressor
from hw.params import validated, check_adders, check_int, check_pow2, check_timesteps
from hw.plif import PLIF
from hw.tppe import DEFAULT_LOOKAHEAD, DEFAULT_RESULT_SLOTS, TPPE, acc_bits_for

LD_A_MASK, LD_A_VAL, LD_A_PTR, LD_B_MASK, LD_B_VAL, LD_B_PTR, LD_BIAS = range(7)

#: Core schedules (hw/README.md "Core"): ``lockstep`` = the paper's (all lanes on one column, one
#: broadcast B fiber, a step costs the slowest lane); ``dynamic`` = ours (a lane runs its row's
#: columns back to back and takes the next free row when done). sim/tppe.py holds the same names.
SCHEDULES = ("lockstep", "dynamic")
DEFAULT_SCHEDULE = "lockstep"


def _bits(n: int) -> int:
    return max(1, int(n).bit_length())


class Core(wiring.Component):
    """LoAS core for one layer shape.

    Parameters (keyword-only)
    ----------
    pes : int            P, number of TPPEs (>= 1)
    timesteps : int      T, 1..16
    chunk_bits : int     bitmask chunk width (power of two)
    weight_bits : int    signed weight width
    laggy_adders : int   A-side laggy prefix-sum adders (power of two <= chunk_bits)
    fifo_depth : int     FIFO-mp / FIFO-B depth (>= 1)
    rows, cols, k : int  largest layer shape M, N, K the memories are sized for; the layer's own
                         shape is given at run time (``rows``, ``cols``, ``chunks`` inputs), so one
                         build serves every layer that fits
    bias_bits : int      signed bias width
    a_nnz, b_nnz : int or None   value-memory depths (default M*K and K*N)
    lookahead : int      chunk pairs a TPPE's F side examines per cycle (TPPE ``lookahead``)
    seg_cache : bool     TPPE segment-base cache for the resident A row (hw/README.md; default True)
    schedule : str       ``lockstep`` (default, the paper's: every lane on the same column) or
                         ``dynamic`` (ours: lanes run rows independently, the next free row to the
                         first lane done)
    result_slots : int   TPPE result slots (jobs whose F side ended, waiting for the L side; 1..8)
    row_prefetch : bool  TPPE walk unit filling a second segment-base bank for the lane's next row
                         (default True; hw/README.md "TPPE")

    Ports
    -----
    ld_sel, ld_addr, ld_data, ld_en : In     memory load port (one word per cycle; map above)
    threshold : In(signed), decay_shift : In(5), n_mask : In(1)   layer LIF / compression settings
    rows, cols, chunks : In   shape of the layer to run (M, N, ceil(K / chunk_bits))
    start : In(1)        pulse: run the whole layer
    done : Out(1)        high from the end of the run until the next start
    cycles : Out(32)     cycles of the last run (sim/tppe.py core_cycles' ``total``)
    out : Out(stream)    per lane ``valid``, ``row``, ``n``, ``word``, ``nz``, ``index`` (position of
                         the word in row ``row``'s packed output fiber); a beat carries every lane
                         whose ``valid`` is set (``out.valid`` = any of them); a lane's beats come
                         in its jobs' order, tagged with their (row, n)

    Raises
    ------
    TypeError, ValueError naming the parameter (P = 0, T > 16, chunk not a power of two, FIFO
    depth 0, ...).
    """

    @validated
    def __init__(self, *, pes=16, timesteps=4, chunk_bits=128, weight_bits=8, laggy_adders=16,
                 fifo_depth=8, rows=16, cols=16, k=128, bias_bits=16, a_nnz=None, b_nnz=None,
                 seg_cache=True, lookahead=DEFAULT_LOOKAHEAD, schedule=DEFAULT_SCHEDULE,
                 result_slots=DEFAULT_RESULT_SLOTS, row_prefetch=True):
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
        self.schedule = schedule
        for name, v in (("seg_cache", seg_cache), ("row_prefetch", row_prefetch)):
            if not isinstance(v, bool):
                raise TypeError(f"{name} must be a bool, got {type(v).__name__}")
        self.seg_cache = seg_cache
        self.row_prefetch = row_prefetch
        self.P = check_int("pes", pes, lo=1, hi=256)
        self.T = check_timesteps(timesteps)
        self.W = check_pow2("chunk_bits", chunk_bits)
        self.weight_bits = check_int("weight_bits", weight_bits, lo=2, hi=16)
        self.laggy_adders = check_adders(chunk_bits, laggy_adders)
        self.fifo_depth = check_int("fifo_depth", fifo_depth, lo=1)
        self.lookahead = check_int("lookahead", lookahead, lo=1, hi=16)
        self.result_slots = check_int("result_slots", result_slots, lo=1, hi=8)
        self.M = check_int("rows", rows, lo=1)
        self.N = check_int("cols", cols, lo=1)
        self.K = check_int("k", k, lo=1)
        self.bias_bits = check_int("bias_bits", bias_bits, lo=1, hi=32)
        self.C = -(-self.K // self.W)
        self.a_nnz = check_int("a_nnz", a_nnz if a_nnz is not None else self.M * self.K, lo=1)
        self.b_nnz = check_int("b_nnz", b_nnz if b_nnz is not None else self.K * self.N, lo=1)
        self.acc_bits = acc_bits_for(chunks=self.C, chunk_bits=self.W, weight_bits=weight_bits, bias_bits=bias_bits)
        self.mem_bits = self.acc_bits + 1
        self.mask_addr_bits = _bits(max(self.M, self.N) * self.C)
        self.a_ptr_bits = _bits(self.a_nnz + self.W)
        self.b_ptr_bits = _bits(self.b_nnz + self.W)
        self.index_bits = _bits(self.N)
        lane = data.StructLayout({"valid": unsigned(1), "row": unsigned(_bits(self.M + 3 * self.P)),
                                  "n": unsigned(_bits(self.N)), "word": unsigned(self.T), "nz": unsigned(1),
                                  "index": unsigned(self.index_bits)})
        self.out_layout = data.StructLayout({"lanes": data.ArrayLayout(lane, self.P)})
        super().__init__({
            "ld_sel": In(3), "ld_addr": In(32), "ld_data": In(max(self.W, 32)), "ld_en": In(1),
            "threshold": In(signed(self.mem_bits)), "decay_shift": In(5), "n_mask": In(1),
            "rows": In(range(1, self.M + 1)), "cols": In(range(1, self.N + 1)),
            "chunks": In(range(1, self.C + 1)),
            "start": In(1), "done": Out(1), "cycles": Out(32),
            "out": Out(stream.Signature(self.out_layout)),
        })

    def tppe(self, tag_bits: int = 1) -> TPPE:
        return TPPE(timesteps=self.T, chunk_bits=self.W, chunks=self.C, weight_bits=self.weight_bits,
                    bias_bits=self.bias_bits, laggy_adders=self.laggy_adders, fifo_depth=self.fifo_depth,
                    mask_addr_bits=self.mask_addr_bits, a_ptr_bits=self.a_ptr_bits, b_ptr_bits=self.b_ptr_bits,
                    seg_cache=self.seg_cache, lookahead=self.lookahead, result_slots=self.result_slots,
                    tag_bits=tag_bits, row_prefetch=self.row_prefetch)

    def elaborate(self, platform):
        m = Module()
        P, T, W = self.P, self.T, self.W
        Mx, Nx, Cx = self.M, self.N, self.C
        M, N, C = self.rows, self.cols, self.chunks  # run-time shape
        mems = {
            # Mask memories padded by lookahead - 1 chunks: the F side's window may reach past the
            # last fiber (those chunks are masked off in the TPPE).
            LD_A_MASK: Memory(shape=W, depth=Mx * Cx + self.lookahead - 1, init=[]),
            LD_A_VAL: Memory(shape=T, depth=self.a_nnz, init=[]),
            LD_A_PTR: Memory(shape=self.a_ptr_bits, depth=Mx + 1, init=[]),
            LD_B_MASK: Memory(shape=W, depth=Nx * Cx + self.lookahead - 1, init=[]),
            LD_B_VAL: Memory(shape=signed(self.weight_bits), depth=self.b_nnz, init=[]),
            LD_B_PTR: Memory(shape=self.b_ptr_bits, depth=Nx + 1, init=[]),
            LD_BIAS: Memory(shape=signed(self.bias_bits), depth=Nx, init=[]),
        }
        names = ["a_mask", "a_val", "a_ptr", "b_mask", "b_val", "b_ptr", "bias"]
        for sel, mem in mems.items():
            m.submodules[f"mem_{names[sel]}"] = mem
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(self.ld_addr), wp.data.eq(self.ld_data),
                         wp.en.eq(self.ld_en & (self.ld_sel == sel))]

        # Job issue and results are decoupled: a lane issues its next job as soon as its TPPE
        # accepts one (its F side is free), and a result goes out when the TPPE has it, tagged with
        # its (row, n). Per lane (last_row, last_n) = the last job issued; after column N - 1 the lane
        # starts the row it claimed when it started the current one (lanes claiming in the same
        # cycle: in lane order, so lockstep reproduces the static groups g*P + i).
        rows_bits = range(Mx + 3 * P + 1)  # next_row + rank never wraps onto a real row
        n_bits = range(max(Nx, 2))
        tag_layout = data.StructLayout({"row": rows_bits, "n": n_bits})
        next_row = Signal(rows_bits)  # first row no lane has claimed
        starting = Signal()
        run = Signal()
        tppes = []
        for i in range(P):
            t = self.tppe(tag_layout.size)
            m.submodules[f"tppe{i}"] = t
            tppes.append(t)
            plif = PLIF(timesteps=T, acc_bits=self.acc_bits, mem_bits=self.mem_bits)
            comp = OutputCompressor(timesteps=T, index_bits=self.index_bits)
            m.submodules[f"plif{i}"] = plif
            m.submodules[f"comp{i}"] = comp
            for j in range(self.lookahead):  # F side window: chunks addr .. addr + lookahead - 1
                for mem, addr, dat in ((LD_A_MASK, t.a_mask_addr, t.a_mask_data),
                                       (LD_B_MASK, t.b_mask_addr, t.b_mask_data)):
                    rp = mems[mem].read_port(domain="comb")
                    m.d.comb += [rp.addr.eq(addr + j), dat[j * W:(j + 1) * W].eq(rp.data)]
            for mem, addr, dat in ((LD_A_MASK, t.al_mask_addr, t.al_mask_data),
                                   (LD_A_MASK, t.aw_mask_addr, t.aw_mask_data),
                                   (LD_A_VAL, t.a_val_addr, t.a_val_data),
                                   (LD_B_VAL, t.b_val_addr, t.b_val_data)):
                rp = mems[mem].read_port(domain="comb")
                m.d.comb += [rp.addr.eq(addr), dat.eq(rp.data)]
            rtag = data.View(tag_layout, t.result.payload.tag)
            fire = Signal(name=f"fire{i}")
            m.d.comb += [
                t.chunks.eq(C),
                fire.eq(comp.o.valid & self.out.ready),
                plif.i.valid.eq(t.result.valid),
                plif.i.payload.eq(t.result.payload.o),
                t.result.ready.eq(plif.i.ready),
                plif.threshold.eq(self.threshold),
                plif.decay_shift.eq(self.decay_shift),
                comp.i.valid.eq(plif.o.valid),
                comp.i.payload.word.eq(plif.o.payload),
                comp.i.payload.first.eq(rtag.n == 0),
                plif.o.ready.eq(comp.i.ready),
                comp.o.ready.eq(fire),
                comp.n_mask.eq(self.n_mask),
            ]
            lane = self.out.payload.lanes[i]
            m.d.comb += [lane.valid.eq(comp.o.valid), lane.row.eq(rtag.row), lane.n.eq(rtag.n),
                         lane.word.eq(comp.o.payload.word), lane.nz.eq(comp.o.payload.nz),
                         lane.index.eq(comp.o.payload.index)]
        m.d.comb += self.out.valid.eq(Cat(*(t.result.valid for t in tppes)).any())

        # Next job per lane. ``lockstep``: every lane with a job issues in the same cycle, when all
        # their TPPEs accept (one shared column, one B fiber broadcast); the rank of a lane taking a
        # new row counts the lanes below it that want one (they all issue together). ``dynamic``:
        # each lane issues on its own; the rank counts the lanes below it that take a row now.
        last_row = [Signal(rows_bits, name=f"last_row{i}") for i in range(P)]
        last_n = [Signal(n_bits, name=f"last_n{i}") for i in range(P)]
        # Each lane claims its next row when it starts one (at start: row P + i), so its TPPE's walk
        # unit fills the next row's segment-base bank while the current row runs (``pf``).
        pf_row = [Signal(rows_bits, name=f"pf_row{i}") for i in range(P)]
        pf_sent = [Signal(name=f"pf_sent{i}") for i in range(P)]
        wants = [Signal(name=f"wants{i}") for i in range(P)]
        gos = [Signal(name=f"go{i}") for i in range(P)]
        takes = []  # lanes taking a new row in this cycle
        oks = []  # lanes whose next job may go (its row handed to the walk unit, if it starts one)
        all_ok = Signal()
        for i, t in enumerate(tppes):
            j_row = Signal(rows_bits, name=f"job_row{i}")
            j_n = Signal(n_bits, name=f"job_n{i}")
            m.d.comb += wants[i].eq(last_n[i] == N - 1)
            if self.schedule == "lockstep":
                rank = _count(wants[:i])
            else:
                rank = _count(takes)
            with m.If(starting):
                m.d.comb += [j_row.eq(i), j_n.eq(0)]
            with m.Elif(wants[i]):
                m.d.comb += [j_row.eq(pf_row[i]), j_n.eq(0)]
            with m.Else():
                m.d.comb += [j_row.eq(last_row[i]), j_n.eq(last_n[i] + 1)]
            m.d.comb += gos[i].eq((starting | run) & (j_row < M))
            # A lane starts its claimed row only once its TPPE has taken the row on ``pf``: a row
            # that ends in the cycle after it started must not let the next one start cold while
            # the walk unit takes it (it would fill the other bank with a row already run).
            pf_ok = Signal(name=f"pf_ok{i}")
            m.d.comb += pf_ok.eq(starting | ~wants[i] | pf_sent[i] if t.prefetch else 1)
            oks.append(pf_ok)
            a_ptr_rp = mems[LD_A_PTR].read_port(domain="comb")
            b_ptr_rp = mems[LD_B_PTR].read_port(domain="comb")
            bias_rp = mems[LD_BIAS].read_port(domain="comb")
            m.d.comb += [a_ptr_rp.addr.eq(j_row), b_ptr_rp.addr.eq(j_n), bias_rp.addr.eq(j_n)]
            jtag = data.View(tag_layout, t.job.payload.tag)
            m.d.comb += [
                t.job.valid.eq(gos[i] & pf_ok & (all_ok if self.schedule == "lockstep" else 1)),
                t.job.payload.a_row.eq(j_row * C),
                t.job.payload.a_ptr.eq(a_ptr_rp.data),
                t.job.payload.b_col.eq(j_n * C),
                t.job.payload.b_ptr.eq(b_ptr_rp.data),
                t.job.payload.bias.eq(bias_rp.data),
                t.job.payload.new_row.eq(j_n == 0),  # mntk: column 0 starts the lane's next row
                jtag.row.eq(j_row), jtag.n.eq(j_n),
            ]
            xfer = t.job.valid & t.job.ready
            take = Signal(name=f"take{i}")
            m.d.comb += take.eq(xfer & wants[i] & ~starting)
            takes.append(take)
            with m.If(xfer):
                m.d.sync += [last_row[i].eq(j_row), last_n[i].eq(j_n)]
            with m.Elif(starting):  # no row for this lane (M < P): it wants one it will never get
                m.d.sync += last_n[i].eq(N - 1)
            m.d.comb += [t.pf.valid.eq(run & (pf_row[i] < M) & ~pf_sent[i]), t.pf.payload.eq(pf_row[i] * C)]
            with m.If(starting):
                m.d.sync += [pf_row[i].eq(P + i), pf_sent[i].eq(0)]
            with m.Elif(take):
                m.d.sync += [pf_row[i].eq(next_row + rank), pf_sent[i].eq(0)]
            with m.Elif(t.pf.valid & t.pf.ready):
                m.d.sync += pf_sent[i].eq(1)
        m.d.comb += all_ok.eq(Cat(*(~g | (t.job.ready & ok) for g, t, ok in zip(gos, tppes, oks))).all())

        idle = Signal()  # nothing to issue and nothing in flight
        m.d.comb += idle.eq(~Cat(*gos).any() & ~Cat(*(t.busy for t in tppes)).any())
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.comb += starting.eq(1)
                    m.d.sync += [next_row.eq(2 * P), self.cycles.eq(0)]
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += run.eq(1)
                m.d.sync += next_row.eq(next_row + _count(takes))
                with m.If(idle):
                    m.next = "DONE"
                with m.Else():
                    m.d.sync += self.cycles.eq(self.cycles + 1)
            with m.State("DONE"):
                m.d.comb += self.done.eq(1)
                with m.If(self.start):
                    m.d.comb += starting.eq(1)
                    m.d.sync += [next_row.eq(2 * P), self.cycles.eq(0)]
                    m.next = "RUN"
        return m


def _count(bits):
    """Number of set bits among a list of 1-bit signals (0 for an empty list)."""
    out = Const(0, 1)
    for b in bits:
        out = out + b
    return out
