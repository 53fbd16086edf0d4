// Image loader of the native-speed testbench (hw/harness.py): a behavioural memory preloaded with
// $readmemh from the hex image hw.host writes, streamed into the core's `load` port one word per
// cycle, with seeded random idle cycles. A DRAM model with the same ports replaces it for a core
// that fetches its own operands.
//
// Ports: reload (pulse: re-read the file named by plusarg +loas_image=PATH), go (pulse: stream
// words 0..n_words-1), idle_thresh (a cycle is idle with probability idle_thresh / 65536), seed;
// the stream valid/ready/payload (valid never depends on ready; a waiting beat holds); busy.
module loas_image_loader #(parameter W = 8, parameter DEPTH = 16) (
  input clk, input rst,
  input reload, input go, input [31:0] n_words, input [15:0] idle_thresh, input [31:0] seed,
  output reg valid, input ready, output reg [W-1:0] payload,
  output busy
);
  reg [W-1:0] img [0:DEPTH-1];
  reg [8*1024-1:0] path;
  reg [31:0] idx, rng, x;
  reg run;
  initial if (!$value$plusargs("loas_image=%s", path)) path = "loas_image.hex";
  assign busy = run | valid;
  always @(posedge clk) begin
    if (reload) $readmemh(path, img);
    x = rng;  // xorshift32
    x = x ^ (x << 13);
    x = x ^ (x >> 17);
    x = x ^ (x << 5);
    rng <= x;
    if (rst) begin
      run <= 0; valid <= 0; idx <= 0; rng <= 32'h2545F491;
    end else if (go) begin
      run <= n_words != 0; valid <= 0; idx <= 0; rng <= seed | 32'h1;
    end else if (!valid || ready) begin
      if (run && x[15:0] >= idle_thresh) begin
        valid <= 1; payload <= img[idx]; idx <= idx + 1; run <= idx + 1 != n_words;
      end else begin
        valid <= 0;
      end
    end
  end
endmodule
