"""The cosimulation form of the RTL (hw.prefix.SIM_CELLS: popcounts as ``$countones`` cells, the
join's B offset as one masked popcount) against the form synthesis sees (adder trees, the fast
prefix-sum): both converted to Verilog, driven side by side with the same random inputs in one
Verilator testbench (sparse, dense, all-zero and all-one words), every output compared every step.
The cosim suites check the cell form against the golden model and the Amaranth-simulator tests
the tree form; this holds the two equal directly."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from amaranth import Signal
from amaranth.lib import wiring

from hw.blocks import blocks
from hw.cosim import VERILATOR_ARGS, VERILATOR_MAKEFLAGS, setup_verilator, to_verilog
from hw.join import InnerJoin
from hw.prefix import SIM_CELLS, SIM_CELLS_VERILOG, popcount

pytestmark = pytest.mark.rtl

STEPS = 4000


# The combinational blocks with popcounts, at the paper's parameters (hw/blocks.py registry), and
# an 8-bit join (every position reachable in a few steps).
BLOCKS = {name: (lambda name=name: blocks()[name]()) for name in ("inner_join", "lookahead_window", "laggy_prefix_sum")}
BLOCKS["inner_join_w8"] = lambda: InnerJoin(chunk_bits=8)


def _ports(component):
    """(name, width, is_input) of every top-level port, as to_verilog names them."""
    out = []
    for path, member, value in component.signature.flatten(component):
        out.append(("__".join(map(str, path)), len(value.as_value() if hasattr(value, "as_value") else value),
                    member.flow == wiring.In))
    return out


def _random(width: int, step: str) -> str:
    """A Verilog expression of a random ``width``-bit value whose density depends on the step:
    all zeros, all ones, sparse (AND of three draws), dense (OR of two) or even."""
    n = (width + 31) // 32

    def draw():
        return "{" + ", ".join(["$random"] * n) + "}"

    return (f"(({step} % 7 == 0) ? {{{width}{{1'b0}}}} : ({step} % 7 == 1) ? {{{width}{{1'b1}}}} : "
            f"({step} % 3 == 0) ? ({draw()} & {draw()} & {draw()}) : ({step} % 3 == 1) ? ({draw()} | {draw()}) "
            f": {draw()})")


def _testbench(duts) -> str:
    """One testbench driving every block's two forms (``dut_tree_<i>``, ``dut_cells_<i>``) with the
    same inputs; it prints ``BAD <mismatches>``."""
    lines = ["module tb;", "  integer step, bad;"]
    body = []
    for k, ports in enumerate(duts):
        ins = [(n, w) for n, w, i in ports if i]
        outs = [(n, w) for n, w, i in ports if not i]
        lines += [f"  reg [{w - 1}:0] b{k}_{n};" for n, w in ins]
        for side in ("tree", "cells"):
            lines += [f"  wire [{w - 1}:0] b{k}_{side}_{n};" for n, w in outs]
            # Escaped port names: a port may be a Verilog keyword (the window's ``end``).
            conns = [f".\\{n} (b{k}_{n})" for n, _ in ins] + [f".\\{n} (b{k}_{side}_{n})" for n, _ in outs]
            lines.append(f"  dut_{side}_{k} u{k}_{side}({', '.join(conns)});")
        body += [f"      b{k}_{n} = {_random(w, 'step')};" for n, w in ins]
        body.append("      #1;")
        body += [f'      if (b{k}_tree_{n} != b{k}_cells_{n}) begin bad = bad + 1; if (bad < 5) '
                 f'$display("MISMATCH block {k} {n} step %0d: tree %h cells %h", step, b{k}_tree_{n}, b{k}_cells_{n}); end'
                 for n, _ in outs]
    lines += ["  initial begin", "    bad = 0;", f"    for (step = 0; step < {STEPS}; step = step + 1) begin"]
    lines += body + ["    end", '    $display("BAD %0d", bad);', "    $finish;", "  end", "endmodule"]
    return "\n".join(lines) + "\n"


def test_cells_equal_trees(tmp_path):
    """Every block of BLOCKS: the tree and the cell form agree on every output at every step
    (one Verilator build of one testbench holding them all)."""
    texts, duts = [], []
    for k, name in enumerate(sorted(BLOCKS)):
        tree = to_verilog(BLOCKS[name](), f"dut_tree_{k}")
        cells = to_verilog(dut := BLOCKS[name](), f"dut_cells_{k}", sim_cells=True)
        assert cells.endswith(SIM_CELLS_VERILOG) and "loas_popcount" in cells and "loas_popcount" not in tree
        if name.startswith("inner_join"):  # the fast prefix-sum is synthesized, not simulated
            assert f"dut_tree_{k}.fast" in tree and f"dut_cells_{k}.fast" not in cells
        texts += [tree, cells[:-len(SIM_CELLS_VERILOG)]]
        duts.append(_ports(dut))
    src = tmp_path / "eq.v"
    src.write_text("\n".join(texts + [SIM_CELLS_VERILOG, _testbench(duts)]))
    setup_verilator()
    env = dict(os.environ, MAKEFLAGS=VERILATOR_MAKEFLAGS.replace("OPT_FAST=-O2", "OPT_FAST=-O0"))
    build = subprocess.run(["verilator", "--binary", *VERILATOR_ARGS, "-Mdir", str(tmp_path / "obj"),
                            "--top-module", "tb", "-o", "eq", str(src)], capture_output=True, text=True, env=env)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    r = subprocess.run([str(tmp_path / "obj" / "eq")], capture_output=True, text=True, check=True)
    bad = re.search(r"BAD (\d+)", r.stdout)
    assert bad, r.stdout[-2000:]
    assert int(bad.group(1)) == 0, r.stdout[-2000:]


def test_popcount_cell_needs_module():
    with pytest.raises(ValueError, match="needs the module"):
        popcount(Signal(8), None, SIM_CELLS)
