// AXI4 DRAM slave of the accelerator's native-speed testbench (hw/accel_cosim.py): a behavioural
// memory of DEPTH lines of D bits, preloaded with $readmemh from the hex image the host writes
// (+loas_dram=PATH, lines 0..n_lines-1 on `reload`), with the timing of hw.dram.DramSlave:
//
// * deterministic (rnd = 0): AR, AW always ready, W ready once its AW is in; beat i of a read burst
//   whose AR was taken in cycle a is valid from max(a + LAT + i * BEAT, the previous beat's transfer
//   + 1); a write's B response is valid LAT cycles after its last W beat;
// * random (rnd = 1, seeded): every ready is low with probability stall_thresh / 65536 in each
//   cycle, and every burst's latency, every beat's gap and every B response get a random extra of
//   0..extra_max cycles.
//
// The slave's outputs depend on its own state only (never on the master's signals of the same
// cycle). Writes land in the memory (byte strobes); `dump` writes lines dump_lo..dump_hi with
// $writememh (+loas_dump=PATH). `clear` empties the queues and restarts the cycle count and the
// random generators. `err` (sticky, the first error; err_cycle its cycle): 1 burst size is not the
// line, 2 unaligned address, 3 a burst crosses 4 KiB, 4 a burst past the image, 5 WLAST wrong,
// 6 a write outside [w_lo, w_hi) (bytes), 7 a queue overflowed.
module loas_axi_dram #(
  parameter D = 512, parameter AW = 32, parameter DEPTH = 16, parameter LAT = 20, parameter BEAT = 1,
  parameter RQ = 4, parameter WQ = 4, parameter BQ = 64
) (
  input clk, input clear, input reload, input dump,
  input [31:0] n_lines, input [31:0] dump_lo, input [31:0] dump_hi,
  input [AW-1:0] w_lo, input [AW-1:0] w_hi,
  input rnd, input [15:0] stall_thresh, input [15:0] extra_max, input [31:0] seed,
  input ar_valid, output ar_ready, input [AW-1:0] ar_addr, input [7:0] ar_len, input [2:0] ar_size,
  output r_valid, input r_ready, output [D-1:0] r_data, output r_last,
  input aw_valid, output aw_ready, input [AW-1:0] aw_addr, input [7:0] aw_len, input [2:0] aw_size,
  input w_valid, output w_ready, input [D-1:0] w_data, input [D/8-1:0] w_strb, input w_last,
  output b_valid, input b_ready,
  output reg [7:0] err, output reg [31:0] err_cycle, output reg [31:0] r_beats, output reg [31:0] w_beats
);
  localparam LB = D / 8;
  reg [D-1:0] mem [0:DEPTH-1];
  reg [8*1024-1:0] dram_path, dump_path;
  initial begin
    if (!$value$plusargs("loas_dram=%s", dram_path)) dram_path = "loas_dram.hex";
    if (!$value$plusargs("loas_dump=%s", dump_path)) dump_path = "loas_dump.hex";
  end
  reg [31:0] cyc;
  // Read bursts: line, beats, cycle of the first beat; the head's next beat and its earliest cycle.
  reg [AW-1:0] rq_line [0:RQ-1];
  reg [8:0] rq_beats [0:RQ-1];
  reg [31:0] rq_first [0:RQ-1];
  reg [$clog2(RQ):0] r_n;
  reg [$clog2(RQ)-1:0] r_h, r_tl;
  reg [8:0] r_i;
  reg [31:0] r_t;
  // Write bursts (line, beats; the head's beats written) and B responses (cycle valid).
  reg [AW-1:0] wq_line [0:WQ-1];
  reg [8:0] wq_beats [0:WQ-1];
  reg [$clog2(WQ):0] w_n;
  reg [$clog2(WQ)-1:0] w_h, w_tl;
  reg [8:0] w_i;
  reg [31:0] bq_t [0:BQ-1];
  reg [$clog2(BQ):0] b_n;
  reg [$clog2(BQ)-1:0] b_h, b_tl;
  // Random readies and extras: xorshift64 per cycle.
  reg [63:0] x_rdy, x_ext;
  wire rd_ar = !rnd || x_rdy[15:0] >= stall_thresh;
  wire rd_aw = !rnd || x_rdy[31:16] >= stall_thresh;
  wire rd_w = !rnd || x_rdy[47:32] >= stall_thresh;
  assign ar_ready = rd_ar;
  assign aw_ready = rd_aw;
  assign w_ready = (w_n != 0) && rd_w;
  assign r_valid = (r_n != 0) && (cyc >= r_t);
  assign r_data = mem[rq_line[r_h] + r_i];
  assign r_last = r_i == rq_beats[r_h] - 1;
  assign b_valid = (b_n != 0) && (cyc >= bq_t[b_h]);

  function [63:0] xs64(input [63:0] v);
    reg [63:0] t;
    begin
      t = v ^ (v << 13);
      t = t ^ (t >> 7);
      xs64 = t ^ (t << 17);
    end
  endfunction

  function [31:0] extra(input [15:0] r);
    extra = rnd ? {16'd0, r} % ({16'd0, extra_max} + 32'd1) : 32'd0;
  endfunction

  task fail(input [7:0] code);
    if (err == 0) begin err <= code; err_cycle <= cyc; end
  endtask

  task check_burst(input [AW-1:0] addr, input [8:0] beats, input [2:0] size);
    begin
      if ((1 << size) != LB) fail(1);
      else if (addr % LB != 0) fail(2);
      else if ((addr >> 12) != ((addr + beats * LB - 1) >> 12)) fail(3);
      else if ((addr / LB) + beats > n_lines) fail(4);
    end
  endtask

  reg [D-1:0] wmask;
  reg [AW-1:0] wbyte;
  reg [31:0] nt;
  integer k;
  always @(posedge clk) begin
    if (reload) $readmemh(dram_path, mem, 0, n_lines - 1);
    if (dump) $writememh(dump_path, mem, dump_lo, dump_hi);
    if (clear) begin
      cyc <= 0; r_n <= 0; r_h <= 0; r_tl <= 0; r_i <= 0; w_n <= 0; w_h <= 0; w_tl <= 0; w_i <= 0;
      b_n <= 0; b_h <= 0; b_tl <= 0; err <= 0; err_cycle <= 0; r_beats <= 0; w_beats <= 0;
      x_rdy <= {seed, 32'h9E3779B9} | 64'h1; x_ext <= {32'h85EBCA6B, seed} | 64'h1;
    end else begin
      cyc <= cyc + 1;
      x_rdy <= xs64(x_rdy);
      x_ext <= xs64(x_ext);
      // R: a beat taken; the burst's next beat, or the next burst (not before the next cycle).
      if (r_valid && r_ready) begin
        r_beats <= r_beats + 1;
        if (r_i + 1 == rq_beats[r_h]) begin
          r_i <= 0;
          r_h <= r_h + 1;
          nt = rq_first[r_h + 1'b1];
          r_t <= nt > cyc + 1 ? nt : cyc + 1;
        end else begin
          r_i <= r_i + 1;
          nt = rq_first[r_h] + (r_i + 1) * BEAT;
          r_t <= (nt > cyc + 1 ? nt : cyc + 1) + extra(x_ext[31:16]);
        end
      end
      // W: a beat into the memory (strobed bytes); after the last, its B response.
      if (w_ready && w_valid) begin
        w_beats <= w_beats + 1;
        for (k = 0; k < LB; k = k + 1) wmask[8 * k +: 8] = {8{w_strb[k]}};
        mem[wq_line[w_h] + w_i] <= (mem[wq_line[w_h] + w_i] & ~wmask) | (w_data & wmask);
        wbyte = (wq_line[w_h] + w_i) * LB;
        if (wbyte < w_lo || wbyte + LB > w_hi) fail(6);
        if (w_last != (w_i + 1 == wq_beats[w_h])) fail(5);
        if (w_i + 1 == wq_beats[w_h]) begin
          w_i <= 0;
          w_h <= w_h + 1;
          bq_t[b_tl] <= cyc + LAT + extra(x_ext[47:32]);
          b_tl <= b_tl + 1;
        end else begin
          w_i <= w_i + 1;
        end
      end
      b_n <= b_n + (w_ready && w_valid && w_i + 1 == wq_beats[w_h]) - (b_valid && b_ready);
      if (b_valid && b_ready) b_h <= b_h + 1;
      if (b_n == BQ && w_ready && w_valid && w_i + 1 == wq_beats[w_h]) fail(7);
      // AR: a burst queued; into an empty queue (or one that empties now) it is the head.
      if (ar_ready && ar_valid) begin
        nt = cyc + LAT + extra(x_ext[15:0]);
        rq_line[r_tl] <= ar_addr / LB;
        rq_beats[r_tl] <= ar_len + 1;
        rq_first[r_tl] <= nt;
        r_tl <= r_tl + 1;
        if (r_n == 0 || (r_n == 1 && r_valid && r_ready && r_i + 1 == rq_beats[r_h])) r_t <= nt;
        check_burst(ar_addr, ar_len + 1, ar_size);
        if (r_n == RQ) fail(7);
      end
      r_n <= r_n + (ar_ready && ar_valid) - (r_valid && r_ready && r_i + 1 == rq_beats[r_h]);
      // AW: a burst queued.
      if (aw_ready && aw_valid) begin
        wq_line[w_tl] <= aw_addr / LB;
        wq_beats[w_tl] <= aw_len + 1;
        w_tl <= w_tl + 1;
        check_burst(aw_addr, aw_len + 1, aw_size);
        if (w_n == WQ) fail(7);
      end
      w_n <= w_n + (aw_ready && aw_valid) - (w_ready && w_valid && w_i + 1 == wq_beats[w_h]);
    end
  end
endmodule
