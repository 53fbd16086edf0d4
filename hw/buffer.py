"""The global buffer (hw/README.md "Global buffer"): banks of single-port synchronous SRAM shared by
R read requesters and one write port, with per-bank round-robin arbitration, merged (broadcast)
reads of the same line, and access counters. Its cycle model is ``sim.buffer.buffer_timing``.
"""

from __future__ import annotations

from amaranth import Array, Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from hw.params import addr_width, validated
from sim.params import BufferParams

#: Width of every access counter (wraps at 2^32, like the accelerator's).
COUNTER_BITS = 32


def request_layout(bp: BufferParams) -> data.StructLayout:
    """Payload of a read request: line address and a tag returned with the data."""
    return data.StructLayout({"addr": unsigned(addr_width(bp.lines)), "tag": unsigned(bp.tag_bits)})


def response_layout(bp: BufferParams) -> data.StructLayout:
    """Payload of a read response: the whole line and the request's tag."""
    return data.StructLayout({"data": unsigned(bp.line_bits), "tag": unsigned(bp.tag_bits)})


def write_layout(bp: BufferParams) -> data.StructLayout:
    """Payload of a write: line address, line data and one enable per byte (bit i: bits 8i..8i+7)."""
    return data.StructLayout({"addr": unsigned(addr_width(bp.lines)), "data": unsigned(bp.line_bits),
                              "en": unsigned(bp.line_bits // 8)})


class GlobalBuffer(wiring.Component):
    """``bp.banks`` banks of single-port SRAM (``lib.memory`` with one registered read port and one
    write port on a shared address, never both enabled: one access per bank per cycle).

    Ports
    -----
    req : In(stream of {addr, tag}).array(R)   read requests; ready = granted this cycle
    resp : Out(stream of {data, tag}, always ready).array(R)
                                     valid exactly one cycle after the grant (registered read);
                                     the requester takes it in that cycle (no backpressure)
    wr : In(stream of {addr, data, en})   the fetch unit's line writes with byte enables; ready =
                                     granted; the line holds the new bytes from the next cycle
    clear : In(1)                    zeroes the counters (takes priority over this cycle's counts)
    bank_reads : Out(32)             bank read accesses (one per bank and cycle that reads)
    merged_reads : Out(32)           read requests served by another requester's bank read
    writes : Out(32)                 bank writes (granted write beats)
    read_stalls : Out(array of 32, R)  cycles requester r's request was valid and not granted
    write_stalls : Out(32)           the same for the write port

    Arbitration, per bank, among the R readers (index r) and the write port (index R) whose valid
    request maps to the bank: round-robin, the first contender at or after the bank's pointer
    (cyclically) wins and the pointer moves to the winner + 1. When the winner is a read, every
    requester asking for the same line in that cycle is granted with it (one bank read, its data
    to all of them).

    Raises
    ------
    TypeError when ``bp`` is not a :class:`~sim.params.BufferParams`.
    """

    @validated
    def __init__(self, bp: BufferParams):
        if not isinstance(bp, BufferParams):
            raise TypeError(f"bp: must be a BufferParams, got {type(bp).__name__}")
        self.bp = bp
        R = bp.requesters
        super().__init__({
            "req": In(stream.Signature(request_layout(bp))).array(R),
            "resp": Out(stream.Signature(response_layout(bp), always_ready=True)).array(R),
            "wr": In(stream.Signature(write_layout(bp))),
            "clear": In(1),
            "bank_reads": Out(COUNTER_BITS), "merged_reads": Out(COUNTER_BITS), "writes": Out(COUNTER_BITS),
            "read_stalls": Out(data.ArrayLayout(COUNTER_BITS, R)), "write_stalls": Out(COUNTER_BITS),
        })

    def _bank(self, addr):
        bp = self.bp
        bb, rb = addr_width(bp.banks), addr_width(bp.lines_per_bank)
        return addr[:bb] if bp.interleave == "line" else addr[rb:rb + bb]

    def _row(self, addr):
        bp = self.bp
        bb, rb = addr_width(bp.banks), addr_width(bp.lines_per_bank)
        return addr[bb:bb + rb] if bp.interleave == "line" else addr[:rb]

    def elaborate(self, platform):
        m = Module()
        bp = self.bp
        R, B, N = bp.requesters, bp.banks, bp.requesters + 1  # N contenders per bank: R reads, 1 write
        addrs = [q.payload.addr for q in self.req]
        banks = [self._bank(a) for a in addrs]
        w_bank = self._bank(self.wr.payload.addr)

        win_read = Signal(B)
        win_write = Signal(B)
        win_addr = []
        read_data = []
        for b in range(B):
            mem = Memory(shape=bp.line_bits, depth=bp.lines_per_bank, init=[])
            m.submodules[f"bank{b}"] = mem
            rp = mem.read_port(domain="sync")
            wp = mem.write_port(granularity=8)
            read_data.append(rp.data)

            want = Signal(N, name=f"want{b}")
            m.d.comb += want.eq(Cat(*[q.valid & (bk == b) for q, bk in zip(self.req, banks)],
                                    self.wr.valid & (w_bank == b)))
            ptr = Signal(range(N), name=f"ptr{b}")
            at_or_after = Signal(N, name=f"after{b}")  # contenders at or after the pointer
            m.d.comb += at_or_after.eq(want & Cat(*[ptr <= i for i in range(N)]))
            pick = Signal(N, name=f"pick{b}")
            m.d.comb += pick.eq(Mux(at_or_after.any(), at_or_after, want))
            win = Signal(range(N), name=f"win{b}")
            for i in reversed(range(N)):  # the lowest set bit of pick wins (the last assignment)
                with m.If(pick[i]):
                    m.d.comb += win.eq(i)
            busy = want.any()
            m.d.comb += [win_read[b].eq(busy & (win != R)), win_write[b].eq(busy & (win == R))]
            with m.If(busy):
                m.d.sync += ptr.eq(Mux(win == N - 1, 0, win + 1))
            wa = Signal.like(addrs[0], name=f"win_addr{b}")
            m.d.comb += wa.eq(Array(addrs + [self.wr.payload.addr])[win])
            win_addr.append(wa)

            # one address for both ports (a single-port macro): the write's when it won, else the read's
            row = Signal(range(bp.lines_per_bank), name=f"row{b}")
            m.d.comb += [row.eq(Mux(win_write[b], self._row(self.wr.payload.addr), self._row(wa))),
                         rp.addr.eq(row), rp.en.eq(win_read[b]),
                         wp.addr.eq(row), wp.data.eq(self.wr.payload.data),
                         wp.en.eq(Mux(win_write[b], self.wr.payload.en, 0))]

        win_read_a, win_addr_a, win_write_a = Array(win_read), Array(win_addr), Array(win_write)
        grants = []
        data_a = Array(read_data)
        for r, q in enumerate(self.req):
            g = Signal(name=f"grant{r}")
            m.d.comb += [g.eq(q.valid & win_read_a[banks[r]] & (addrs[r] == win_addr_a[banks[r]])), q.ready.eq(g)]
            grants.append(g)
            # response: registered grant, tag and bank; the data is the bank's read port output,
            # which holds the line read in the grant cycle during the response cycle
            sel = Signal(range(B), name=f"resp_bank{r}")
            o = self.resp[r]
            m.d.sync += o.valid.eq(g)
            with m.If(g):
                m.d.sync += [o.payload.tag.eq(q.payload.tag), sel.eq(banks[r])]
            m.d.comb += o.payload.data.eq(data_a[sel])
        m.d.comb += self.wr.ready.eq(win_write_a[w_bank])

        n_reads = sum(win_read[b] for b in range(B))
        n_grants = sum(grants)
        with m.If(self.clear):
            m.d.sync += [self.bank_reads.eq(0), self.merged_reads.eq(0), self.writes.eq(0),
                         self.read_stalls.as_value().eq(0), self.write_stalls.eq(0)]
        with m.Else():
            m.d.sync += [self.bank_reads.eq(self.bank_reads + n_reads),
                         self.merged_reads.eq(self.merged_reads + n_grants - n_reads),
                         self.writes.eq(self.writes + (self.wr.valid & self.wr.ready)),
                         self.write_stalls.eq(self.write_stalls + (self.wr.valid & ~self.wr.ready))]
            for r, q in enumerate(self.req):
                m.d.sync += self.read_stalls[r].eq(self.read_stalls[r] + (q.valid & ~grants[r]))
        return m
