"""`loas sim`, `loas compare` and `loas sweep`: the cycle-level models (sim/loas.py, sim/baselines.py)."""

from __future__ import annotations

import sys
from pathlib import Path

from loas.commands import add_json, emit
from loas.options import (add_config, add_energy, add_engine, add_layer, add_out, add_sample, add_seed, add_workload,
                          positive)
from sim.designs import BASELINES, FIDELITIES, NAMES
#: Largest sweep grid run without an explicit, larger --max-points.
MAX_POINTS = 256


def register(sub):
    p = sub.add_parser("sim", help="simulate a workload on LoAS or a baseline (cycles, traffic, energy)")
    add_workload(p)
    add_layer(p)
    p.add_argument("--design", choices=NAMES, default="loas", help="design to simulate")
    _fidelity(p)
    add_out(p, "reports/sim", "report directory of --fidelity both")
    _common(p)
    add_json(p)
    p.set_defaults(func=cmd_sim)

    p = sub.add_parser("compare", help="LoAS against every baseline; writes CSV, JSON and PNG plots")
    _workloads(p, "names under traces/ or workload directories (one report each)")
    add_layer(p)
    p.add_argument("--designs", default=None,
                   help=f"comma-separated baselines out of {', '.join(BASELINES)} (default: all those the "
                        "fidelity models)")
    _fidelity(p)
    add_out(p, "reports/compare", "report directory (with several workloads, one subdirectory each)")
    _engine(p)
    _common(p)
    add_json(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("sweep", help="design-space sweep on a Dask cluster (embedded by default); resumes")
    p.add_argument("--param", action="append", default=[], metavar="NAME=V1,V2",
                   help="a LoASConfig key (pes, timesteps or T, tile.m, buffer.capacity_kb, loop_order, ...) "
                        "or a synthetic-data key (weight_density, silent_ratio); repeat for a grid")
    _workloads(p, "trace workloads (default: synthetic VGG16 at the paper's densities)")
    add_layer(p, help="sweep only this layer (of each workload, or of the synthetic VGG16; default: every layer)")
    p.add_argument("--designs", default="sparten",
                   help="baselines to compute speedups against (default: sparten)")
    p.add_argument("--max-points", type=positive, default=MAX_POINTS,
                   help="refuse a grid of more points than this")
    add_seed(p, "seed of the synthetic workload")
    add_out(p, "reports/sweep", "report directory; finished points are kept in OUT/store and a rerun "
                                "computes only the missing ones")
    _engine(p)
    _common(p)
    add_json(p)
    p.set_defaults(func=cmd_sweep)


def _fidelity(p):
    p.add_argument("--fidelity", choices=FIDELITIES, default="cycle",
                   help="cycle: our cycle-level models; paper: the LoAS authors' cost models "
                        "(sim/paper.py); both: side by side, the difference split into causes")
    p.add_argument("--paper-energy", default="energy_paper",
                   help="energy constants of the paper method: a name under sim/configs/ or a YAML path "
                        "(default: energy_paper)")


def _engine(p):
    add_engine(p)


def _workloads(p, help: str):
    """Workloads as positionals and/or repeated --workload (like loas.options.add_workload, several)."""
    p.add_argument("workloads_pos", nargs="*", default=[], metavar="WORKLOAD", help=f"{help} (or --workload)")
    p.add_argument("--workload", dest="workloads_opt", action="append", default=[], metavar="WORKLOAD",
                   help="a workload (repeatable; alias of the positional WORKLOAD)")


def _workload_list(args, required: bool) -> list[str]:
    from sim.errors import UserError

    ws = [*args.workloads_pos, *args.workloads_opt]
    if required and not ws:
        raise UserError("WORKLOAD: give at least one (positional or --workload)")
    return ws


def _common(p):
    add_config(p)
    add_energy(p)
    add_sample(p)


def _configs(args):
    from sim.config import load
    from sim.energy import load_energy

    cfg = load(args.config)
    econf = load_energy(args.energy)
    return cfg, econf


def _config_name(args) -> str:
    from sim.config import config_path

    return str(config_path(args.config))


def _designs(spec: str | None, fidelity: str = "cycle") -> list[str]:
    from sim.designs import PAPER
    from sim.errors import UserError

    if spec is None:
        return list(BASELINES) if fidelity == "cycle" else [d for d in BASELINES if d in PAPER]
    names = [d.strip() for d in spec.split(",") if d.strip()]
    bad = [d for d in names if d not in BASELINES]
    if bad or not names:
        raise UserError(f"--designs: unknown baseline {bad[0] if bad else spec!r}; "
                        f"choose from {', '.join(BASELINES)}")
    return names


def cmd_sim(args) -> int:
    from sim.report import check_inputs, run_design, sim_report, workload_inputs

    cfg, econf = _configs(args)
    inputs = workload_inputs(args.workload, sample=args.sample, layer=args.layer)
    if args.fidelity != "cycle":
        return _sim_paper(args, cfg, econf, inputs)
    check_inputs(inputs, cfg, _config_name(args), [args.design])
    sims = run_design(args.design, inputs, cfg, econf)
    rep = sim_report(args.design, sims, cfg, str(args.workload))

    def text():
        lines = [f"{args.design} on {args.workload} ({cfg.pes} PEs, {cfg.clock_mhz:g} MHz)",
                 f"{'layer':<10}{'cycles':>12}{'eff. ops':>12}{'util':>7}{'SRAM B':>12}{'DRAM B':>11}"
                 f"{'energy uJ':>11}  stalls"]
        for s in sims:
            st = ", ".join(f"{k}={v}" for k, v in s.stalls.items() if v)
            lines.append(f"{s.layer:<10}{s.cycles:>12}{s.effectual_ops:>12}{s.pe_utilization:>7.1%}"
                         f"{s.sram_bytes:>12}{s.dram_bytes:>11}{s.energy_total / 1e6:>11.3f}  {st}")
        t = rep["total"]
        lines.append(f"{'total':<10}{t['cycles']:>12}{t['effectual_ops']:>12}{t['pe_utilization']:>7.1%}"
                     f"{t['sram_bytes']:>12}{t['dram_bytes']:>11}{t['energy'] / 1e6:>11.3f}  "
                     f"({t['time_s'] * 1e3:.3f} ms)")
        return lines

    emit(args, rep, text)
    return 0


def _paper_energy(args):
    from sim.paper import load_paper_energy

    return load_paper_energy(args.paper_energy)


def _sim_paper(args, cfg, econf, inputs) -> int:
    """`loas sim --fidelity paper|both`."""
    from sim.fidelity import (check_paper_designs, format_paper_layers, format_rows, run_paper, side_by_side,
                              write_fidelity_report)
    from sim.paper import paper_totals
    from sim.report import check_inputs, run_design

    check_paper_designs([args.design])
    if args.fidelity == "both":
        from sim.atomic import check_target
        from sim.report import COMPARE_TARGET

        check_target(args.out, **COMPARE_TARGET)  # before the work
    paper = run_paper(args.design, inputs, cfg, _paper_energy(args))
    meta = {"workload": str(args.workload), "design": args.design, "sample": args.sample,
            "loop_order": cfg.loop_order, "fidelity": args.fidelity}
    if args.fidelity == "paper":
        total = paper_totals(paper)
        emit(args, {**meta, "layers": [p.to_dict() for p in paper], "total": total},
             lambda: [f"{args.design} on {args.workload}, paper method (the LoAS authors' cost models, 16 PEs)",
                      format_paper_layers(paper, total)])
        return 0
    check_inputs(inputs, cfg, _config_name(args), [args.design])
    ours = run_design(args.design, inputs, cfg, econf)
    rows = side_by_side(args.design, ours, paper, cfg.pes)
    files = _report_whole(args.out, lambda tmp: write_fidelity_report(tmp, rows, meta))
    emit(args, {**meta, "rows": rows, "report": [str(f) for f in files]},
         lambda: [f"{args.design} on {args.workload}: paper method vs cycle-level ({cfg.pes} PEs)", format_rows(rows),
                  f"report: {', '.join(str(f) for f in files)}"])
    return 0


def cmd_compare(args) -> int:
    from sim.atomic import check_output, check_target
    from sim.errors import UserError
    from sim.report import (COMPARE_TARGET, check_inputs, compare, compare_workloads, workload_inputs,
                            write_compare_report)

    cfg, econf = _configs(args)
    designs = _designs(args.designs, args.fidelity)
    workloads = _workload_list(args, required=True)
    if len(workloads) > 1:  # one report folder per workload under --out, each checked when written
        check_output(args.out)
    else:
        check_target(args.out, **COMPARE_TARGET)  # before the work
    if args.fidelity != "cycle":  # the paper method: one workload, in this process
        if len(workloads) > 1:
            raise UserError(f"--fidelity {args.fidelity}: one workload at a time (got {len(workloads)})")
        args.workload = workloads[0]
        return _compare_paper(args, cfg, econf, designs,
                              workload_inputs(args.workload, sample=args.sample, layer=args.layer))
    inputs = {}
    for w in workloads:
        name = _unique(Path(str(w)).name, inputs)
        inputs[name] = workload_inputs(w, sample=args.sample, layer=args.layer)
        check_inputs(inputs[name], cfg, _config_name(args), ["loas", *designs])
    ran, failures = compare_workloads(inputs, designs, cfg, econf, progress=not args.no_progress,
                                      scheduler=args.scheduler, workers=args.workers)
    several = len(workloads) > 1
    reports = {}
    for (name, lis), w in zip(inputs.items(), workloads):
        if name not in ran:
            continue
        results = ran[name]
        comp = compare(results)
        meta = {"workload": str(w), "sample": args.sample, "layers": [li.name for li in lis]}
        out = Path(args.out) / name if several else Path(args.out)
        reports[name] = (meta, comp, write_compare_report(out, results, comp, meta))
    docs = []
    for meta, comp, files in reports.values():
        short = {d: {k: v[k] for k in ("speedup", "energy_efficiency", "dram_ratio", "sram_ratio",
                                         "mean_layer_speedup", "max_layer_speedup", "layers")}
                 for d, v in comp["baselines"].items()}
        docs.append({**meta, "baselines": short, "loas": comp["loas"], "report": [str(f) for f in files]})
    doc = docs[0] if not several and docs else {"workloads": docs}

    def text():
        lines = []
        for meta, comp, files in reports.values():
            lines += [f"LoAS vs baselines on {meta['workload']} (whole network; ratios are baseline / LoAS)",
                      f"{'baseline':<10}{'speedup':>9}{'energy eff.':>13}{'DRAM ratio':>12}{'SRAM ratio':>12}"
                      f"{'max layer':>11}"]
            for d, v in comp["baselines"].items():
                lines.append(f"{d:<10}{v['speedup']:>8.2f}x{v['energy_efficiency']:>12.2f}x"
                             f"{_fmt(v['dram_ratio']):>12}{_fmt(v['sram_ratio']):>12}{v['max_layer_speedup']:>10.2f}x")
            lines.append("per-layer speedup of LoAS:")
            names = list(comp["baselines"])
            lines.append(f"{'layer':<10}" + "".join(f"{d:>10}" for d in names))
            for i, layer in enumerate(meta["layers"]):
                lines.append(f"{layer:<10}" + "".join(f"{comp['baselines'][d]['layers'][i]['speedup']:>9.2f}x"
                                                     for d in names))
            lines.append(f"report: {', '.join(str(f) for f in files)}")
        return lines

    emit(args, {**doc, "failures": failures} if failures else doc, text)
    return _failed(failures)


def _unique(name: str, taken) -> str:
    out, i = name, 2
    while out in taken:
        out, i = f"{name}-{i}", i + 1
    return out


def _failed(failures) -> int:
    """Exit status of a run on the engine: 1 (and a count on stderr) if some points failed."""
    if failures:
        print(f"loas: {len(failures)} point{'s' * (len(failures) > 1)} failed (listed above)", file=sys.stderr)
        return 1
    return 0


def _report_whole(out, write) -> list[Path]:
    """A --fidelity report folder written whole: ``write(tmp)`` writes its files into a temp folder
    that replaces ``out`` in one rename (sim.atomic.replace_dir); returns the files' paths under ``out``."""
    from sim.atomic import replace_dir
    from sim.report import COMPARE_TARGET

    with replace_dir(out, **COMPARE_TARGET) as tmp:
        names = [f.name for f in write(Path(tmp))]
    return [Path(out) / n for n in names]


def _compare_paper(args, cfg, econf, designs, inputs) -> int:
    """`loas compare --fidelity paper|both`."""
    from sim.fidelity import (check_paper_designs, format_rows, format_speedups, run_paper, side_by_side,
                              speedup_rows, write_fidelity_report, write_paper_report)
    from sim.report import COMPARE_FILES, _compare_files, check_inputs, compare, run_design

    check_paper_designs(designs)
    pe = _paper_energy(args)
    names = ["loas", *designs]
    layers = [li.name for li in inputs]
    paper = {d: run_paper(d, inputs, cfg, pe) for d in names}
    meta = {"workload": str(args.workload), "sample": args.sample, "layers": layers, "fidelity": args.fidelity,
            "loop_order": cfg.loop_order}
    ours, rows = None, []
    if args.fidelity == "both":
        check_inputs(inputs, cfg, _config_name(args), names)
        ours = {d: run_design(d, inputs, cfg, econf) for d in names}
        for d in names:
            rows += side_by_side(d, ours[d], paper[d], cfg.pes)
    sp = speedup_rows(paper, ours, layers)
    def write(tmp):
        if ours is None:
            return write_paper_report(tmp, paper, sp, meta)
        _compare_files(tmp, ours, compare(ours), {k: meta[k] for k in ("workload", "sample", "layers")})
        return [tmp / n for n in COMPARE_FILES] + write_fidelity_report(tmp, rows, meta, sp)

    files = _report_whole(args.out, write)

    def text():
        what = "paper method vs cycle-level" if ours else "paper method"
        lines = [f"LoAS vs baselines on {args.workload}, {what} (ratios are baseline / LoAS)", format_speedups(sp)]
        if rows:
            lines += ["", "cycles of each design, cycle-level over paper method:", format_rows(rows)]
        return lines + [f"report: {', '.join(str(f) for f in files)}"]

    emit(args, {**meta, "speedups": sp, "rows": rows, "report": [str(f) for f in files]}, text)
    return 0


def _fmt(v):
    return "n/a" if v is None else f"{v:.2f}x"


def cmd_sweep(args) -> int:
    from sim.atomic import check_target
    from sim.errors import UserError
    from sim.report import SWEEP_TARGET, check_grid, parse_params, sweep, write_sweep_report

    check_target(args.out, **SWEEP_TARGET)  # before the work
    cfg, econf = _configs(args)
    if not args.param:
        raise UserError("--param: give at least one, e.g. --param pes=4,8,16")
    params = parse_params(args.param)
    check_grid(params, args.max_points)
    designs = ["loas", *_designs(args.designs)]
    res = sweep(params, base=cfg, designs=designs, workloads=_workload_list(args, required=False),
                sample=args.sample, seed=args.seed, layer=args.layer, progress=not args.no_progress, out=args.out, econf=econf,
                scheduler=args.scheduler, workers=args.workers)
    rows = res.rows
    files = write_sweep_report(args.out, rows, params, res.failures) if rows else []

    def text():
        lines = []
        if rows:
            lines.append("  ".join(f"{k:>14}" for k in rows[0]))
            for r in rows:
                lines.append("  ".join(f"{v:>14.4g}" if isinstance(v, float) else f"{str(v):>14}"
                                       for v in r.values()))
        lines.append(f"{res.computed} layer points computed, {res.cached} from {Path(args.out) / 'store'}, "
                     f"{len(res.failures)} failed ({res.seconds:.1f} s)")
        if files:
            lines.append(f"report: {', '.join(str(f) for f in files)}")
        return lines

    emit(args, {"params": params, "rows": rows, "failures": res.failures, "computed": res.computed,
                "cached": res.cached, "report": [str(f) for f in files]}, text)
    return _failed(res.failures)
