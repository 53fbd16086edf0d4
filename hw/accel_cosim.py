"""Native-speed testbench of the accelerator (hw/accel.py; hw/README.md "Cosimulation"): a Verilog top
``loas_accel_tb`` around ``Accelerator(chip)`` with a behavioural AXI4 DRAM slave
(hw/tb/accel/axi_dram.v, the timing of :class:`hw.dram.DramSlave`), so that the simulator runs a
whole layer -- descriptor writes, start, every fetch and write burst, done -- without Python per
cycle. Verilator (default) or Icarus, one cached build per chip (hw.cosim.build).

Per layer the host writes the DRAM image (``hw.host.dram_image``'s bytes) and the descriptor writes
as ``$readmemh`` hex; the cocotb side (tests/cocotb/accel_native_tb.py) moves them into place,
changes ``seq`` and awaits one ``RisingEdge(finished)``; the top has then reloaded the DRAM, reset
the accelerator, written the descriptor, started it, waited for ``done`` (or the cycle budget),
latched the counters and dumped the output region with ``$writememh``. Here the output fibers are
read back from that dump (``hw.host.read_outputs``). Many layers run in one simulator process.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from hw.accel import ARRAYS, COUNTERS
from hw.cosim import ROOT, TB_DIR, build, build_info, setup_verilator, stream_testbench
from sim.memory import DESC_FIELDS

TOP = "loas_accel_tb"
DRAM_V = Path(__file__).resolve().parent / "tb" / "accel" / "axi_dram.v"
#: Status outputs of the testbench top (besides the counters).
STATUS = ("finished", "timeout", "run_cycles", "tb_cycles", "r_beats", "w_beats", "dram_err", "dram_err_cycle")
#: The DRAM slave's error codes (hw/tb/accel/axi_dram.v).
DRAM_ERRORS = {1: "burst size is not the line", 2: "unaligned burst address", 3: "a burst crosses 4 KiB",
               4: "a burst past the DRAM image", 5: "WLAST wrong", 6: "a write outside the output region",
               7: "a request queue overflowed"}
#: Random DRAM mode: probability that a ready is low in a cycle (as hw.dram.DramSlave's ``stall``).
STALL = 0.25
CSR_DEPTH = 64


def dram_depth(chip) -> int:
    """Lines of the testbench DRAM: the largest image ``hw.host.dram_image`` lays out for a layer
    this build accepts (M, N, K at their limits, the most spike words and weights the tiles allow)."""
    from sim.memory import region_sizes, tiling

    til = tiling(chip.max_m, chip.max_k, chip.max_n, chip)
    a_nnz = min(chip.max_m * chip.max_k, til.groups * chip.a_nnz)
    b_nnz = min(chip.max_k * chip.max_n, til.n_tiles * chip.b_nnz)
    lb = chip.mem.line_bytes
    sizes = region_sizes(chip.max_m, chip.max_n, til.C, a_nnz, b_nnz, chip, til)
    lines = sum(-(-max(1, n) // lb) for n in sizes.values())
    return min(lines, (1 << chip.mem.addr_bits) // lb)


def _ports(acc) -> dict:
    from hw.harness import core_ports

    return core_ports(acc)


def tb_verilog(acc, chip) -> str:
    """The ``loas_accel_tb`` top around ``loas_accel`` (the converted ``acc``) and the DRAM slave."""
    from hw.accel import csr_layout
    from hw.axi import addr_layout, r_layout, w_layout

    ports = _ports(acc)
    mp = chip.mem
    D, A, LB = mp.data_bits, mp.addr_bits, mp.line_bytes
    al, rl, wl, cl = addr_layout(A), r_layout(D), w_layout(D), csr_layout()
    CW = ports["csr__payload"][0]

    def sl(bus, f):
        return f"{bus}[{f.offset + f.width - 1}:{f.offset}]"

    arrays = [(n, ports[n][0]) for n in ARRAYS]
    head = f"""
  input rst,
  input [31:0] seq,           // a new value runs one layer: reload DRAM, reset, descriptor, start, wait, dump
  input [31:0] n_lines,       // DRAM image lines (+loas_dram)
  input [31:0] n_csr,         // descriptor writes (+loas_csr)
  input [31:0] dump_lo,       // lines $writememh'd at the end (+loas_dump): the output region
  input [31:0] dump_hi,
  input [{A - 1}:0] w_lo,          // bytes the writes may touch
  input [{A - 1}:0] w_hi,
  input rnd,                  // random DRAM timing
  input [15:0] stall_thresh,  // ready low with probability stall_thresh / 65536
  input [15:0] extra_max,     // random extra latency 0..extra_max per burst, beat, response
  input [31:0] seed,
  input [31:0] budget,        // cycles after start before the run is abandoned (timeout)
  output reg finished,        // the layer is done (or timed out), its counters latched, its outputs dumped
  output reg timeout,
{chr(10).join(f"  output reg [31:0] {n}," for n in COUNTERS)}
{chr(10).join(f"  output reg [{w - 1}:0] {n}," for n, w in arrays)}
  output reg [31:0] run_cycles,  // start to done, the testbench's count
  output reg [31:0] tb_cycles,   // every cycle of the layer (descriptor writes and dump included)
  output [31:0] r_beats,
  output [31:0] w_beats,
  output [7:0] dram_err,
  output [31:0] dram_err_cycle
);"""
    names = ["rst", "seq", "n_lines", "n_csr", "dump_lo", "dump_hi", "w_lo", "w_hi", "rnd", "stall_thresh",
             "extra_max", "seed", "budget", "finished", "timeout", *COUNTERS, *ARRAYS, *STATUS[2:]]
    wrapper = head.replace("output reg", "output")
    inputs = ["n_lines", "n_csr", "dump_lo", "dump_hi", "w_lo", "w_hi", "rnd", "stall_thresh", "extra_max", "seed",
              "budget"]
    width = {"w_lo": A, "w_hi": A, "rnd": 1, "stall_thresh": 16, "extra_max": 16}
    regs = "\n".join(f"  reg [{width.get(n, 32) - 1}:0] {n}_q = 0;" for n in inputs)
    latch = " ".join(f"{n}_q <= {n};" for n in inputs)
    counters = [f"a_{n}" for n in COUNTERS] + [f"a_{n}" for n in ARRAYS]
    wires = "\n".join([f"  wire [31:0] a_{n};" for n in COUNTERS] + [f"  wire [{w - 1}:0] a_{n};" for n, w in arrays])
    latch_counters = " ".join(f"{c[2:]} <= {c};" for c in counters)
    conn = ",\n".join(f"    .{c[2:]}({c})" for c in counters)
    return f"""`timescale 1ns/1ps
// Generated by hw/accel_cosim.py: the native-speed testbench top around loas_accel (P = {chip.core.pes},
// {D}-bit AXI4 DRAM port, DRAM model latency {mp.latency}, {mp.beat_cycles} cycle(s) per beat). The top is a
// wrapper: Verilator makes the top module's signals visible to cocotb (VPI), and logic that reads
// such a signal is re-evaluated in every time step; inside the body only the ports are.
module {TOP} ({wrapper}
  {TOP}_body body ({", ".join(f".{n}({n})" for n in names)});
endmodule

module {TOP}_body ({head}
  reg clk = 1'b0;
  always #1 clk = ~clk;
  // The design sees registered copies of the inputs cocotb writes, taken when a layer starts.
  reg rst_q = 1'b1;
  always @(posedge clk) rst_q <= rst;
{regs}
  reg [31:0] last_seq = 0;
  reg [2:0] st = 0;
  reg [31:0] csr_i = 0;
  reg [{CW - 1}:0] csr_img [0:{CSR_DEPTH - 1}];
  reg [8*1024-1:0] csr_path;
  initial if (!$value$plusargs("loas_csr=%s", csr_path)) csr_path = "loas_csr.hex";
  reg dump = 0;
  wire reset = rst_q | (st == 1);  // every layer starts from reset: the accelerator and the DRAM's queues
  wire csr_valid = (st == 2) && (csr_i != n_csr_q);
  wire csr_ready, done;
  wire start = st == 3;
  wire ar_valid, ar_ready, r_valid, r_ready, r_last, aw_valid, aw_ready, w_valid, w_ready, b_valid, b_ready;
  wire [{al.size - 1}:0] ar_p, aw_p;
  wire [{wl.size - 1}:0] w_p;
  wire [{D - 1}:0] r_data;
{wires}
  loas_accel acc (
    .clk(clk), .rst(reset),
    .csr__valid(csr_valid), .csr__ready(csr_ready), .csr__payload(csr_img[csr_i[{(CSR_DEPTH - 1).bit_length() - 1}:0]]),
    .start(start), .done(done),
    .rd__ar__valid(ar_valid), .rd__ar__ready(ar_ready), .rd__ar__payload(ar_p),
    .rd__r__valid(r_valid), .rd__r__ready(r_ready), .rd__r__payload({{r_last, 2'b00, r_data}}),
    .wr__aw__valid(aw_valid), .wr__aw__ready(aw_ready), .wr__aw__payload(aw_p),
    .wr__w__valid(w_valid), .wr__w__ready(w_ready), .wr__w__payload(w_p),
    .wr__b__valid(b_valid), .wr__b__ready(b_ready), .wr__b__payload(2'b00),
{conn});
  loas_axi_dram #(.D({D}), .AW({A}), .DEPTH({dram_depth(chip)}), .LAT({mp.latency}), .BEAT({mp.beat_cycles})) dram (
    .clk(clk), .clear(reset), .reload(st == 1), .dump(dump),
    .n_lines(n_lines_q), .dump_lo(dump_lo_q), .dump_hi(dump_hi_q), .w_lo(w_lo_q), .w_hi(w_hi_q),
    .rnd(rnd_q), .stall_thresh(stall_thresh_q), .extra_max(extra_max_q), .seed(seed_q),
    .ar_valid(ar_valid), .ar_ready(ar_ready), .ar_addr({sl("ar_p", al["addr"])}), .ar_len({sl("ar_p", al["len"])}),
    .ar_size({sl("ar_p", al["size"])}),
    .r_valid(r_valid), .r_ready(r_ready), .r_data(r_data), .r_last(r_last),
    .aw_valid(aw_valid), .aw_ready(aw_ready), .aw_addr({sl("aw_p", al["addr"])}), .aw_len({sl("aw_p", al["len"])}),
    .aw_size({sl("aw_p", al["size"])}),
    .w_valid(w_valid), .w_ready(w_ready), .w_data({sl("w_p", wl["data"])}), .w_strb({sl("w_p", wl["strb"])}),
    .w_last({sl("w_p", wl["last"])}),
    .b_valid(b_valid), .b_ready(b_ready),
    .err(dram_err), .err_cycle(dram_err_cycle), .r_beats(r_beats), .w_beats(w_beats));
  // IDLE -> (seq changed) RESET (DRAM and descriptor files read) -> CSR -> START -> RUN (until done
  // or the budget; counters latched) -> DUMP -> IDLE (finished)
  always @(posedge clk) begin
    dump <= 0;
    if (st != 0) tb_cycles <= tb_cycles + 1;
    if (rst_q) begin
      st <= 0; finished <= 0; timeout <= 0; last_seq <= seq;
    end else case (st)
      0: if (seq != last_seq) begin
           last_seq <= seq; finished <= 0; timeout <= 0; {latch} tb_cycles <= 0; st <= 1;
         end
      1: begin $readmemh(csr_path, csr_img, 0, n_csr_q - 1); csr_i <= 0; st <= 2; end
      2: if (csr_i == n_csr_q) st <= 3;
         else if (csr_ready) csr_i <= csr_i + 1;
      3: begin run_cycles <= 0; st <= 4; end  // the accelerator takes start at this edge
      4: begin
           run_cycles <= run_cycles + 1;
           if (done | (run_cycles >= budget_q)) begin
             {latch_counters}
             timeout <= ~done; dump <= 1; st <= 5;
           end
         end
      5: begin finished <= 1; st <= 0; end  // the DRAM wrote its dump at this edge
      default: st <= 0;
    endcase
  end
endmodule
"""


def tb_design(chip) -> str:
    """Verilog of ``loas_accel_tb``: the accelerator, the generated top and the DRAM slave."""
    from hw.accel import Accelerator
    from hw.cosim import to_verilog

    acc = Accelerator(chip)
    return "\n".join(["`timescale 1ns/1ps", to_verilog(acc, "loas_accel", sim_cells=True), tb_verilog(acc, chip), DRAM_V.read_text()])


def build_accel_native(chip, simulator: str = "verilator") -> Path:
    """Build (once per chip, RTL and testbench sources) the accelerator's native-speed testbench."""
    import inspect

    # The testbench's own sources (the RTL's are in hw.cosim's build key).
    src = "".join(inspect.getsource(f) for f in (tb_verilog, tb_design, dram_depth)) + DRAM_V.read_text()
    tb = hashlib.sha256((src + repr((COUNTERS, ARRAYS, STATUS, CSR_DEPTH))).encode()).hexdigest()[:16]
    spec = {"chip": dataclasses.asdict(chip), "tb": tb}
    return build(TOP, lambda: tb_design(chip), spec, simulator, verilator_args=["--timing"])


def write_dram(path, mem, line_bytes: int) -> int:
    """The DRAM image as ``$readmemh`` hex, one line (little-endian bytes) per row; return the lines."""
    a = np.frombuffer(bytes(mem), np.uint8).reshape(-1, line_bytes)[:, ::-1]
    h = a.tobytes().hex()
    n = 2 * line_bytes
    Path(path).write_text("\n".join(h[i:i + n] for i in range(0, len(h), n)) + "\n")
    return a.shape[0]


def read_dram(path, mem: bytearray, first_line: int, line_bytes: int) -> None:
    """Put the lines of a ``$writememh`` dump (from line ``first_line``) back into ``mem``. Icarus
    writes address comments (``// 0x...``); an ``@`` line moves the address."""
    at = first_line
    chunks = []
    for raw in Path(path).read_text().split():
        if raw.startswith("//") or raw.startswith("0x"):
            continue
        if raw.startswith("@"):
            at = int(raw[1:], 16)
            continue
        if any(c in raw for c in "xXzZ"):
            raise ValueError(f"{path}: line {at} of the DRAM dump is not fully defined ({raw[:16]}...)")
        chunks.append((at, raw))
        at += 1
    for line, raw in chunks:
        mem[line * line_bytes:(line + 1) * line_bytes] = bytes.fromhex(raw.rjust(2 * line_bytes, "0"))[::-1]


def write_csr(path, desc: dict) -> int:
    """The descriptor writes (register index, value) as ``$readmemh`` hex of ``csr`` payloads."""
    from hw.accel import csr_layout
    from hw.host import pack

    lay = csr_layout()
    digits = -(-lay.size // 4)
    lines = [f"{pack(lay, addr=i, data=desc[f]):0{digits}x}" for i, f in enumerate(DESC_FIELDS)]
    Path(path).write_text("\n".join(lines) + "\n")
    return len(lines)


def _budget(words, weights, chip, mem_bytes: int) -> int:
    """Cycles after start before a run is abandoned: far above any layer's (every job's scan at one
    chunk per cycle and every DRAM line many times over)."""
    M, K = np.shape(words)
    N = np.shape(weights)[1]
    return min((1 << 32) - 1, 8 * (M * N * (chip.core.chunks(K) + 4) + mem_bytes) + 100_000)


def run_accel_layers(layers, chip, *, simulator: str = "verilator", random_dram: bool = False, seed: int = 0,
                     on_result=None, cancel=None, loop_order: str = "mntk") -> dict:
    """Run layers through one simulator process of the native-speed testbench on ``Accelerator(chip)``.

    ``layers``: (name, words, weights, bias, lif, n_mask) tuples. ``random_dram``: random DRAM
    readies and extra latency (seeded, ``seed`` + the layer's index). ``loop_order``: the tiles'
    order (:data:`sim.memory.LOOP_ORDERS`, a descriptor field: the same build runs both). ``on_result(i, res)`` is
    called as each layer's result arrives; ``cancel()`` True stops after the layer in progress.
    Returns ``{"results": [per layer: the counters as hw.amsim.run_accel_sim (``cycles``,
    ``compute``, ``fetch_wait``, ``write_wait``, ``words_loaded``, ``bytes_read``, ...),
    ``collector`` (the output fibers read back from the DRAM dump), ``image``, ``errors`` (a
    timeout or the DRAM slave's error), ``r_beats``, ``w_beats``, ``sim_cycles``, ``sim_wall_s``,
    ``sim_cpu_s``], "build_s", "build"}``. ValueError (one line) for a layer that does not fit the
    build (``hw.host.dram_image``); RuntimeError when the testbench itself fails."""
    from cocotb_tools.runner import get_runner

    from hw.host import dram_image, read_outputs

    lb = chip.mem.line_bytes
    depth = dram_depth(chip)
    imgs = [dram_image(w, wt, b, lif, nm, chip, name=name, loop_order=loop_order) for name, w, wt, b, lif, nm in layers]
    for (name, *_), img in zip(layers, imgs):
        if len(img.mem) // lb > depth:
            raise ValueError(f"layer {name}: the DRAM image ({len(img.mem)} bytes) exceeds the testbench's "
                             f"{depth} lines of {lb} bytes")
    t0 = time.perf_counter()
    bdir = build_accel_native(chip, simulator)
    t_build = time.perf_counter() - t0
    if simulator == "verilator":
        setup_verilator()
    records = []
    with tempfile.TemporaryDirectory(prefix="accel-", dir=bdir) as tmp:
        tmp = Path(tmp)
        entries = []
        for i, ((name, words, weights, *_), img) in enumerate(zip(layers, imgs)):
            n_lines = write_dram(tmp / f"{i}.dram.hex", img.mem, lb)
            n_csr = write_csr(tmp / f"{i}.csr.hex", img.desc)
            lo = img.regions["o_mask"][0]
            entries.append({"name": name, "dram": str(tmp / f"{i}.dram.hex"), "csr": str(tmp / f"{i}.csr.hex"),
                            "dump": str(tmp / f"{i}.dump.hex"), "n_lines": n_lines, "n_csr": n_csr,
                            "dump_lo": lo // lb, "dump_hi": n_lines - 1, "w_lo": lo, "w_hi": len(img.mem),
                            "rnd": int(random_dram), "stall_thresh": int(STALL * 65536) if random_dram else 0,
                            "extra_max": max(1, chip.mem.latency // 4) if random_dram else 0,
                            "seed": (seed + i) & 0xFFFF_FFFF,
                            "budget": _budget(words, weights, chip, len(img.mem))})
        res_path = tmp / "results.jsonl"
        inp = tmp / "in.json"
        inp.write_text(json.dumps({"layers": entries, "dram": str(tmp / "dram.hex"), "csr": str(tmp / "csr.hex"),
                                   "dump": str(tmp / "dump.hex"), "results": str(res_path),
                                   "stop_file": str(tmp / "stop")}))
        plusargs = [f"+loas_dram={tmp / 'dram.hex'}", f"+loas_csr={tmp / 'csr.hex'}", f"+loas_dump={tmp / 'dump.hex'}"]
        runner = get_runner(simulator)

        def take(rec):
            i = len(records)
            img = imgs[i]
            read_dram(rec["dump"], img.mem, entries[i]["dump_lo"], lb)
            os.unlink(rec["dump"])
            errors = []
            if rec["timeout"]:
                errors.append(f"timeout: done never rose within {entries[i]['budget']} cycles")
            if rec["dram_err"]:
                errors.append(f"DRAM: {DRAM_ERRORS.get(rec['dram_err'], rec['dram_err'])} "
                              f"(cycle {rec['dram_err_cycle']} of the run)")
            res = {k: rec[k] for k in (*COUNTERS, *ARRAYS, "r_beats", "w_beats", "run_cycles", "sim_cycles",
                                       "sim_wall_s", "sim_cpu_s")}
            res.update(collector=read_outputs(img, chip), image=img, errors=errors, tb_cycles=rec["run_cycles"])
            records.append(res)
            if on_result:
                on_result(i, res)

        stream_testbench(lambda: runner.test(
            test_module="accel_native_tb", hdl_toplevel=TOP, hdl_toplevel_lang="verilog", build_dir=bdir,
            test_dir=TB_DIR, plusargs=plusargs,
            extra_env={"LOAS_ACCEL_IN": str(inp), "PYTHONPATH": os.pathsep.join([str(ROOT), str(TB_DIR)])},
            results_xml=str(tmp / "results.xml"), log_file=tmp / "sim.log"), res_path, take, tmp, cancel=cancel,
            what=f"the accelerator's native testbench failed ({simulator})")
    return {"results": records, "build_s": t_build, "build": build_info(bdir), "build_dir": str(bdir)}


def run_accel(words, weights, bias, lif, n_mask: int, chip, *, simulator: str = "verilator",
              random_dram: bool = False, seed: int = 0, name: str = "layer") -> dict:
    """One layer through :func:`run_accel_layers`: its result dict with ``build_s``."""
    out = run_accel_layers([(name, words, weights, bias, lif, n_mask)], chip, simulator=simulator,
                           random_dram=random_dram, seed=seed)
    res = out["results"][0]
    res["build_s"] = out["build_s"]
    return res
