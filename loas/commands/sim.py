"""`loas sim`, `loas compare` and `loas sweep`: the cycle-level models (sim/loas.py, sim/baselines.py)."""

from __future__ import annotations

from loas.commands import add_json, emit
from loas.options import add_config, add_energy, add_layer, add_out, add_sample, add_seed, add_workload, positive

DESIGN_CHOICES = ("loas", "sparten", "gospa", "gamma", "ptb", "stellar")
#: Largest sweep grid run without an explicit, larger --max-points.
MAX_POINTS = 256


def register(sub):
    p = sub.add_parser("sim", help="simulate a workload on LoAS or a baseline (cycles, traffic, energy)")
    add_workload(p)
    add_layer(p)
    p.add_argument("--design", choices=DESIGN_CHOICES, default="loas", help="design to simulate")
    _common(p)
    add_json(p)
    p.set_defaults(func=cmd_sim)

    p = sub.add_parser("compare", help="LoAS against every baseline; writes CSV, JSON and PNG plots")
    add_workload(p)
    add_layer(p)
    p.add_argument("--designs", default="sparten,gospa,gamma,ptb,stellar",
                   help=f"comma-separated baselines out of {', '.join(DESIGN_CHOICES[1:])} (default: all)")
    add_out(p, "reports/compare", "report directory")
    _common(p)
    add_json(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("sweep", help="design-space sweep in parallel worker processes")
    p.add_argument("--param", action="append", default=[], metavar="NAME=V1,V2",
                   help="a LoASConfig key (pes, timesteps or T, tile.m, buffer.capacity_kb, loop_order, ...) "
                        "or a synthetic-data key (weight_density, silent_ratio); repeat for a grid")
    add_workload(p, required=False,
                 help="trace workload (default: synthetic VGG16 at the paper's densities)")
    add_layer(p, help="sweep only this layer (of the workload, or of the synthetic VGG16; default: every layer)")
    p.add_argument("--designs", default="sparten",
                   help="baselines to compute speedups against (default: sparten)")
    p.add_argument("--jobs", type=positive, default=None, help="worker processes (default: min(4, CPUs))")
    p.add_argument("--max-points", type=positive, default=MAX_POINTS,
                   help="refuse a grid of more points than this")
    add_seed(p, "seed of the synthetic workload")
    add_out(p, "reports/sweep", "report directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _common(p)
    add_json(p)
    p.set_defaults(func=cmd_sweep)


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


def _designs(spec: str) -> list[str]:
    from sim.errors import UserError

    names = [d.strip() for d in spec.split(",") if d.strip()]
    bad = [d for d in names if d not in DESIGN_CHOICES or d == "loas"]
    if bad or not names:
        raise UserError(f"--designs: unknown baseline {bad[0] if bad else spec!r}; "
                        f"choose from {', '.join(DESIGN_CHOICES[1:])}")
    return names


def cmd_sim(args) -> int:
    from sim.report import check_timesteps, run_design, sim_report, workload_inputs

    cfg, econf = _configs(args)
    inputs = workload_inputs(args.workload, sample=args.sample, layer=args.layer)
    check_timesteps(inputs, cfg, _config_name(args))
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


def cmd_compare(args) -> int:
    from sim.atomic import check_target
    from sim.report import (COMPARE_TARGET, check_timesteps, compare, run_design, workload_inputs,
                            write_compare_report)

    check_target(args.out, **COMPARE_TARGET)  # before the work
    cfg, econf = _configs(args)
    designs = _designs(args.designs)
    inputs = workload_inputs(args.workload, sample=args.sample, layer=args.layer)
    check_timesteps(inputs, cfg, _config_name(args))
    results = {d: run_design(d, inputs, cfg, econf) for d in ["loas", *designs]}
    comp = compare(results)
    meta = {"workload": str(args.workload), "sample": args.sample, "layers": [li.name for li in inputs]}
    files = write_compare_report(args.out, results, comp, meta)
    short = {d: {k: v[k] for k in ("speedup", "energy_efficiency", "dram_ratio", "sram_ratio",
                                     "mean_layer_speedup", "max_layer_speedup", "layers")}
             for d, v in comp["baselines"].items()}

    def text():
        lines = [f"LoAS vs baselines on {args.workload} (whole network; ratios are baseline / LoAS)",
                 f"{'baseline':<10}{'speedup':>9}{'energy eff.':>13}{'DRAM ratio':>12}{'SRAM ratio':>12}"
                 f"{'max layer':>11}"]
        for d, v in comp["baselines"].items():
            lines.append(f"{d:<10}{v['speedup']:>8.2f}x{v['energy_efficiency']:>12.2f}x{_fmt(v['dram_ratio']):>12}"
                         f"{_fmt(v['sram_ratio']):>12}{v['max_layer_speedup']:>10.2f}x")
        lines.append("per-layer speedup of LoAS:")
        names = list(comp["baselines"])
        lines.append(f"{'layer':<10}" + "".join(f"{d:>10}" for d in names))
        for i, li in enumerate(inputs):
            lines.append(f"{li.name:<10}" + "".join(f"{comp['baselines'][d]['layers'][i]['speedup']:>9.2f}x"
                                                    for d in names))
        lines.append(f"report: {', '.join(str(f) for f in files)}")
        return lines

    emit(args, {**meta, "baselines": short, "loas": comp["loas"], "report": [str(f) for f in files]}, text)
    return 0


def _fmt(v):
    return "n/a" if v is None else f"{v:.2f}x"


def cmd_sweep(args) -> int:
    from sim.errors import UserError
    from sim.atomic import check_target
    from sim.report import SWEEP_TARGET, check_grid, default_jobs, parse_params, sweep, write_sweep_report

    check_target(args.out, **SWEEP_TARGET)  # before the work
    cfg, _ = _configs(args)
    if not args.param:
        raise UserError("--param: give at least one, e.g. --param pes=4,8,16")
    params = parse_params(args.param)
    check_grid(params, args.max_points)
    designs = ["loas", *_designs(args.designs)]
    rows = sweep(params, base=cfg, designs=designs, workload=args.workload, sample=args.sample,
                 jobs=args.jobs or default_jobs(), seed=args.seed, layer=args.layer, progress=not args.no_progress)
    files = write_sweep_report(args.out, rows, params)

    def text():
        keys = list(rows[0])
        lines = ["  ".join(f"{k:>14}" for k in keys)]
        for r in rows:
            lines.append("  ".join(f"{v:>14.4g}" if isinstance(v, float) else f"{str(v):>14}" for v in r.values()))
        lines.append(f"report: {', '.join(str(f) for f in files)}")
        return lines

    emit(args, {"params": params, "rows": rows, "report": [str(f) for f in files]}, text)
    return 0
