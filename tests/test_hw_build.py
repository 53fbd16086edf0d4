"""The cosim build's own pieces, which lean on other projects' output: our Verilator command (held
equal to cocotb's runner command but for one flag) and the rewrites of Amaranth's Verilog (each
must still find what it rewrites in today's generated text)."""

from __future__ import annotations

import re
import shutil

import pytest

from hw import cosim
from hw.core import Core
from sim.params import Capacity, CoreParams


@pytest.fixture(scope="module")
def core_verilog():
    from amaranth.back import verilog

    core = Core(CoreParams(pes=1), Capacity(rows=4, cols=4, k=128))
    return verilog.convert(core, name="loas_core", emit_src=False)


def test_verilator_command_is_cocotbs_with_public_depth(tmp_path, monkeypatch):
    """If cocotb changes how it builds for Verilator (flags, VPI library, main file), this fails:
    hw.cosim.verilator_commands must then follow it."""
    if not cosim.simulator_available("verilator"):
        pytest.skip("Verilator not installed")
    cosim.setup_verilator()
    from cocotb_tools.runner import get_runner

    runner = get_runner("verilator")
    captured = []
    monkeypatch.setattr(runner, "_execute", lambda cmds, cwd: captured.extend(cmds))
    src = tmp_path / "t.v"
    src.write_text("module t; endmodule\n")
    runner.build(sources=[src], hdl_toplevel="t", build_dir=tmp_path, build_args=cosim.VERILATOR_ARGS,
                 waves=False, always=True, timescale=("1ns", "1ps"))
    theirs = [list(c) for c in captured]
    assert "--public-flat-rw" in theirs[0]
    i = theirs[0].index("--public-flat-rw")
    theirs[0][i:i + 1] = ["--public-depth", "1"]
    ours = cosim.verilator_commands("t", src, tmp_path, waves=False)
    assert ours[1:] == theirs[1:] and ours[0][1:] == theirs[0][1:]
    assert shutil.which(ours[0][0]) == shutil.which(theirs[0][0])


def test_zero_init_compaction_applies(core_verilog):
    """Amaranth still writes word-by-word zero initialisers, and the compaction turns each run into
    one loop (same initial state: every word it drops was a zero)."""
    runs = re.findall(r"initial begin\n((?:\s+\w+\[\d+\] = \d+'[hb]0+;\n){5,})\s+end", core_verilog)
    assert runs
    out = cosim._compact_zero_inits(core_verilog)
    loops = re.findall(r"initial for \((_zinit_\d+) = 0; \1 < (\d+);", out)
    assert len(loops) == len(runs)
    assert sorted(int(n) for _, n in loops) == sorted(r.count(";") for r in runs)
    assert len(out) < len(core_verilog)


def test_comb_kick_applies(core_verilog):
    """Yosys still guards ``always @*`` blocks with a dummy reg initialised to 0; the Icarus kick
    toggles every one of them at time 0."""
    n = len(cosim._KICK_RE.findall(core_verilog))
    assert n > 0
    assert cosim._kick_comb_blocks(core_verilog).count("initial #0 ") == n
