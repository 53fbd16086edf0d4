// Output capture of the native-speed testbench (hw/harness.py): every transfer on the P lanes'
// `out` streams is stored as {lane, payload} in arrival order (lanes of one cycle in lane order),
// with seeded random backpressure. dump (pulse) writes beats 0..count-1 with $writememh to the file
// named by plusarg +loas_capture=PATH. overflow: more beats than DEPTH (the excess is dropped).
module loas_beat_capture #(parameter P = 1, parameter LW = 8, parameter DEPTH = 16) (
  input clk, input rst,
  input clear, input dump, input [15:0] bp_thresh, input [31:0] seed,
  input [P-1:0] valid, output reg [P-1:0] ready, input [P*LW-1:0] payload,
  output reg [31:0] count, output reg overflow
);
  reg [LW+7:0] cap [0:DEPTH-1];
  reg [8*1024-1:0] path;
  reg [31:0] rng [0:P-1];
  reg [31:0] a, x;
  integer i;
  initial if (!$value$plusargs("loas_capture=%s", path)) path = "loas_capture.hex";
  always @(posedge clk) begin
    if (dump && count != 0) $writememh(path, cap, 0, (count > DEPTH ? DEPTH : count) - 1);
    a = count;
    for (i = 0; i < P; i = i + 1) begin
      if (valid[i] && ready[i]) begin
        if (a < DEPTH) cap[a] <= {i[7:0], payload[i*LW +: LW]};
        a = a + 1;
      end
      x = rng[i];
      x = x ^ (x << 13);
      x = x ^ (x >> 17);
      x = x ^ (x << 5);
      rng[i] <= (rst || clear) ? (seed ^ (32'h9E3779B9 * (i + 1))) | 32'h1 : x;
      ready[i] <= rst ? 1'b1 : x[15:0] >= bp_thresh;
    end
    if (rst || clear) begin
      count <= 0; overflow <= 0;
    end else begin
      count <= a;
      overflow <= overflow | (a > DEPTH);
    end
  end
endmodule
