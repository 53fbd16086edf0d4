"""`loas sim`, `loas compare` and `loas sweep`: the cycle-level models (sim/loas.py, sim/baselines.py)."""

from __future__ import annotations

import json

from loas.commands import add_json

DESIGN_CHOICES = ("loas", "sparten", "gospa", "gamma", "ptb", "stellar")


def register(sub):
    p = sub.add_parser("sim", help="simulate a workload on LoAS or a baseline (cycles, traffic, energy)")
    p.add_argument("workload", help="a name under traces/ or a workload directory")
    p.add_argument("--layer", help="simulate only this layer")
    p.add_argument("--design", choices=DESIGN_CHOICES, default="loas")
    _common(p)
    add_json(p)
    p.set_defaults(func=cmd_sim)

    p = sub.add_parser("compare", help="LoAS against every baseline; writes CSV, JSON and PNG plots")
    p.add_argument("workload", help="a name under traces/ or a workload directory")
    p.add_argument("--layer", help="compare only this layer")
    p.add_argument("--designs", default="sparten,gospa,gamma,ptb,stellar",
                   help="comma-separated baselines (default: all)")
    p.add_argument("--out", default="reports/compare", help="report directory (default reports/compare)")
    _common(p)
    add_json(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("sweep", help="design-space sweep in parallel worker processes")
    p.add_argument("--param", action="append", default=[], metavar="NAME=V1,V2",
                   help="a LoASConfig key (pes, timesteps or T, tile.m, buffer.capacity_kb, loop_order, ...) "
                        "or a synthetic-data key (weight_density, silent_ratio); repeat for a grid")
    p.add_argument("--workload", help="trace workload (default: synthetic VGG16 at the paper's densities)")
    p.add_argument("--layer", help="sweep only this layer (of the workload, or of the synthetic VGG16)")
    p.add_argument("--designs", default="sparten", help="baselines to compute speedups against (default sparten)")
    p.add_argument("--jobs", type=int, default=None, help="worker processes (default: min(4, CPUs))")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic workload")
    p.add_argument("--out", default="reports/sweep", help="report directory (default reports/sweep)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _common(p)
    add_json(p)
    p.set_defaults(func=cmd_sweep)


def _common(p):
    p.add_argument("--config", help="LoAS configuration YAML (default sim/configs/loas.yaml)")
    p.add_argument("--energy", help="energy constants YAML (default sim/configs/energy.yaml)")
    p.add_argument("--sample", type=int, default=0, help="sample index of the trace (default 0)")


def _configs(args):
    from sim.config import load
    from sim.energy import load_energy

    cfg = load(args.config or "loas")
    econf = load_energy(args.energy or "energy")
    return cfg, econf


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
    check_timesteps(inputs, cfg, args.config or "sim/configs/loas.yaml")
    sims = run_design(args.design, inputs, cfg, econf)
    rep = sim_report(args.design, sims, cfg, str(args.workload))
    if args.json:
        print(json.dumps(rep, indent=2))
        return 0
    print(f"{args.design} on {args.workload} ({cfg.pes} PEs, {cfg.clock_mhz:g} MHz)")
    print(f"{'layer':<10}{'cycles':>12}{'eff. ops':>12}{'util':>7}{'SRAM B':>12}{'DRAM B':>11}{'energy uJ':>11}"
          f"  stalls")
    for s in sims:
        st = ", ".join(f"{k}={v}" for k, v in s.stalls.items() if v)
        print(f"{s.layer:<10}{s.cycles:>12}{s.effectual_ops:>12}{s.pe_utilization:>7.1%}{s.sram_bytes:>12}"
              f"{s.dram_bytes:>11}{s.energy_total / 1e6:>11.3f}  {st}")
    t = rep["total"]
    print(f"{'total':<10}{t['cycles']:>12}{t['effectual_ops']:>12}{t['pe_utilization']:>7.1%}{t['sram_bytes']:>12}"
          f"{t['dram_bytes']:>11}{t['energy'] / 1e6:>11.3f}  ({t['time_s'] * 1e3:.3f} ms)")
    return 0


def cmd_compare(args) -> int:
    from sim.atomic import check_target
    from sim.report import (COMPARE_TARGET, check_timesteps, compare, run_design, workload_inputs,
                            write_compare_report)

    check_target(args.out, **COMPARE_TARGET)  # before the work
    cfg, econf = _configs(args)
    designs = _designs(args.designs)
    inputs = workload_inputs(args.workload, sample=args.sample, layer=args.layer)
    check_timesteps(inputs, cfg, args.config or "sim/configs/loas.yaml")
    results = {d: run_design(d, inputs, cfg, econf) for d in ["loas", *designs]}
    comp = compare(results)
    meta = {"workload": str(args.workload), "sample": args.sample, "layers": [li.name for li in inputs]}
    files = write_compare_report(args.out, results, comp, meta)
    if args.json:
        short = {d: {k: v[k] for k in ("speedup", "energy_efficiency", "dram_ratio", "sram_ratio",
                                         "mean_layer_speedup", "max_layer_speedup", "layers")}
                 for d, v in comp["baselines"].items()}
        print(json.dumps({**meta, "baselines": short, "loas": comp["loas"], "report": [str(f) for f in files]},
                         indent=2))
        return 0
    print(f"LoAS vs baselines on {args.workload} (whole network; ratios are baseline / LoAS)")
    print(f"{'baseline':<10}{'speedup':>9}{'energy eff.':>13}{'DRAM ratio':>12}{'SRAM ratio':>12}{'max layer':>11}")
    for d, v in comp["baselines"].items():
        print(f"{d:<10}{v['speedup']:>8.2f}x{v['energy_efficiency']:>12.2f}x{_fmt(v['dram_ratio']):>12}"
              f"{_fmt(v['sram_ratio']):>12}{v['max_layer_speedup']:>10.2f}x")
    print("per-layer speedup of LoAS:")
    names = list(comp["baselines"])
    print(f"{'layer':<10}" + "".join(f"{d:>10}" for d in names))
    for i, li in enumerate(inputs):
        print(f"{li.name:<10}" + "".join(f"{comp['baselines'][d]['layers'][i]['speedup']:>9.2f}x" for d in names))
    print(f"report: {', '.join(str(f) for f in files)}")
    return 0


def _fmt(v):
    return "n/a" if v is None else f"{v:.2f}x"


def cmd_sweep(args) -> int:
    from sim.errors import UserError
    from sim.atomic import check_target
    from sim.report import SWEEP_TARGET, default_jobs, parse_params, sweep, write_sweep_report

    check_target(args.out, **SWEEP_TARGET)  # before the work
    cfg, _ = _configs(args)
    if not args.param:
        raise UserError("--param: give at least one, e.g. --param pes=4,8,16")
    params = parse_params(args.param)
    designs = ["loas", *_designs(args.designs)]
    rows = sweep(params, base=cfg, designs=designs, workload=args.workload, sample=args.sample,
                 jobs=args.jobs or default_jobs(), seed=args.seed, layer=args.layer, progress=not args.no_progress)
    files = write_sweep_report(args.out, rows, params)
    if args.json:
        print(json.dumps({"params": params, "rows": rows, "report": [str(f) for f in files]}, indent=2))
        return 0
    keys = list(rows[0])
    print("  ".join(f"{k:>14}" for k in keys))
    for r in rows:
        print("  ".join(f"{v:>14.4g}" if isinstance(v, float) else f"{str(v):>14}" for v in r.values()))
    print(f"report: {', '.join(str(f) for f in files)}")
    return 0
