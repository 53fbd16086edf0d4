"""AXI4 channels of the accelerator's DRAM port as ``wiring.Signature`` s (hw/README.md
"Accelerator"). Every channel is an ``amaranth.lib.stream`` (``valid``/``ready``/``payload``, the
stream rules of hw/README.md), its payload named as the AXI4 signals (``ARADDR`` = ``ar.payload.addr``
...). Bursts are INCR of full-width beats (``size`` = log2(data bytes)); ids, cache, prot, qos and
region are constant (one outstanding transaction per channel) and are left to the Verilog wrapper."""

from __future__ import annotations

from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

BURST_INCR = 1


def addr_layout(addr_bits: int) -> data.StructLayout:
    """AR / AW payload: byte address, beats - 1, log2(bytes per beat), burst type."""
    return data.StructLayout({"addr": addr_bits, "len": 8, "size": 3, "burst": 2})


def r_layout(data_bits: int) -> data.StructLayout:
    return data.StructLayout({"data": data_bits, "resp": 2, "last": 1})


def w_layout(data_bits: int) -> data.StructLayout:
    return data.StructLayout({"data": data_bits, "strb": data_bits // 8, "last": 1})


def b_layout() -> data.StructLayout:
    return data.StructLayout({"resp": 2})


class AXIReadSignature(wiring.Signature):
    """AXI4 read master (master's view): ``ar`` Out(stream of address), ``r`` In(stream of data)."""

    def __init__(self, addr_bits: int, data_bits: int):
        self.addr_bits, self.data_bits = addr_bits, data_bits
        super().__init__({"ar": Out(stream.Signature(addr_layout(addr_bits))),
                          "r": In(stream.Signature(r_layout(data_bits)))})


class AXIWriteSignature(wiring.Signature):
    """AXI4 write master (master's view): ``aw``, ``w`` Out(stream), ``b`` In(stream of response)."""

    def __init__(self, addr_bits: int, data_bits: int):
        self.addr_bits, self.data_bits = addr_bits, data_bits
        super().__init__({"aw": Out(stream.Signature(addr_layout(addr_bits))),
                          "w": Out(stream.Signature(w_layout(data_bits))),
                          "b": In(stream.Signature(b_layout()))})
