"""Testbench DRAM of Amaranth's simulator (hw/amsim.py): an AXI4 slave over a bytearray. The
native-speed testbench's Verilog slave (hw/tb/accel/axi_dram.v, hw/accel_cosim.py) implements the
same timing. Per cycle the testbench calls
:meth:`DramSlave.outputs` (what the slave drives: readies, R beat, B response -- from its state
only, never from the master's signals of the same cycle) and then :meth:`DramSlave.observe` with the
master's signals of that cycle (transfers update the state).

Deterministic timing (``rng`` None; the cycle model's, sim/memory.py and ``MemParams``): AR, AW and
W always ready (W once its AW is in); beat i of a read burst accepted in cycle a is valid from cycle
max(a + latency + i * beat_cycles, the previous beat's transfer + 1); a write's B response is valid
``latency`` cycles after its last W beat. With ``rng`` every ready is dropped at random (probability
``stall``) and every burst's latency and every beat's gap get a random extra of up to latency / 4
cycles (outputs must not change; cycles can only grow)."""

from __future__ import annotations


class DramSlave:
    def __init__(self, mem: bytearray, mp, rng=None, stall: float = 0.25):
        self.mem, self.mp, self.rng, self.stall = mem, mp, rng, stall
        self.lb = mp.line_bytes
        self.reads = []   # [addr, beats, next beat, earliest cycle of the next beat, first cycle]
        self.writes = []  # [addr, beats, beats written]
        self.bresp = []   # cycles at which a B response becomes valid
        self.r_beats = self.w_beats = 0
        self._out = {}

    def _extra(self):
        return self.rng.randint(0, max(1, self.mp.latency // 4)) if self.rng else 0

    def _ready(self):
        return 0 if self.rng and self.rng.random() < self.stall else 1

    def outputs(self, cycle: int) -> dict:
        """The slave's signals in this cycle: ar_ready, aw_ready, w_ready, r_valid (+ r_data,
        r_last), b_valid."""
        o = {"ar_ready": self._ready(), "aw_ready": self._ready(), "r_valid": 0, "r_data": 0, "r_last": 0}
        if self.reads and cycle >= self.reads[0][3]:
            addr, beats, i = self.reads[0][:3]
            a = addr + i * self.lb
            o.update(r_valid=1, r_data=int.from_bytes(self.mem[a:a + self.lb], "little"), r_last=int(i == beats - 1))
        o["w_ready"] = int(bool(self.writes)) & self._ready()
        o["b_valid"] = int(bool(self.bresp) and cycle >= self.bresp[0])
        self._out = o
        return o

    def observe(self, cycle: int, *, ar_valid, ar_addr, ar_len, ar_size, r_ready, aw_valid, aw_addr, aw_len,
                aw_size, w_valid, w_data, w_strb, w_last, b_ready):
        """The master's signals in this cycle (after :meth:`outputs`): apply the transfers."""
        o, mp, lb = self._out, self.mp, self.lb
        if o["r_valid"] and r_ready:
            self.r_beats += 1
            burst = self.reads[0]
            burst[2] += 1
            if burst[2] == burst[1]:
                self.reads.pop(0)
                if self.reads:
                    self.reads[0][3] = max(self.reads[0][3], cycle + 1)
            else:
                burst[3] = max(burst[4] + burst[2] * mp.beat_cycles, cycle + 1) + self._extra()
        if o["b_valid"] and b_ready:
            self.bresp.pop(0)
        if o["w_ready"] and w_valid:
            addr, beats, i = self.writes[0]
            a = addr + i * lb
            for k in range(lb):
                if w_strb >> k & 1:
                    self.mem[a + k] = (w_data >> (8 * k)) & 0xFF
            self.w_beats += 1
            self.writes[0][2] += 1
            if bool(w_last) != (i == beats - 1):
                raise AssertionError(f"cycle {cycle}: WLAST wrong on beat {i} of {beats}")
            if i == beats - 1:
                self.writes.pop(0)
                self.bresp.append(cycle + mp.latency + self._extra())
        if o["ar_ready"] and ar_valid:
            first = cycle + mp.latency + self._extra()
            self.reads.append([ar_addr, ar_len + 1, 0, first, first])
            self._check_burst(ar_addr, ar_len + 1, ar_size, cycle)
        if o["aw_ready"] and aw_valid:
            self.writes.append([aw_addr, aw_len + 1, 0])
            self._check_burst(aw_addr, aw_len + 1, aw_size, cycle)

    def _check_burst(self, addr, beats, size, cycle):
        lb = self.lb
        if 1 << size != lb:
            raise AssertionError(f"cycle {cycle}: burst size {1 << size} bytes, the port is {lb}")
        if addr % lb:
            raise AssertionError(f"cycle {cycle}: unaligned burst address {addr:#x}")
        if addr // 4096 != (addr + beats * lb - 1) // 4096:
            raise AssertionError(f"cycle {cycle}: burst {addr:#x} of {beats} beats crosses 4 KiB")
        if addr + beats * lb > len(self.mem):
            raise AssertionError(f"cycle {cycle}: burst {addr:#x} + {beats} beats past the DRAM image")
