"""The two fidelities side by side: the paper's method (:mod:`sim.paper`) and our cycle-level
models (sim/loas.py, sim/baselines.py) on the same layers, and why they differ.

Both count the same effectual operations W (LoAS: packed matches; the per-timestep baselines:
spike x weight pairs). The paper's method charges ``W / 16`` plus its per-tile barrier over PEs
(:attr:`sim.paper.PaperLayer.imbalance`) and nothing else; our models also charge the time the
paper leaves out. The difference ``ours - paper`` is split, in cycles, into

* ``work``       ``W_ours / P - W_paper / 16`` (zero unless the PE count or the counts differ)
* ``scan``       PE time beyond one cycle per match in an inner-join PE: bitmask chunk pairs
                 without a match, per-output overheads, the TPPE's FIFO and drain stalls and row
                 walks (LoAS, SparTen-S)
* ``imbalance``  our idle PE time at lane barriers minus the paper's per-tile barrier (negative
                 where our barrier costs less)
* ``memory``     cycles beyond compute: LoAS the accelerator's cycles with its core idle (waiting
                 for a tile's fetch, for the output writer, for the sequencers: sim.memory.accel_timing);
                 the baselines what DRAM or buffer bandwidth adds, and the first fill
* ``merge``      partial-sum merging: Gamma-S's extra merge rounds and pipeline fills, GoSPA-S's
                 accumulation-bank conflicts

so that ``ours / paper = 1 + sum(causes) / paper`` exactly; each cause's share of the ratio is
``cause / paper``.
"""

from __future__ import annotations

import json
from pathlib import Path

from sim.designs import PAPER, get
from sim.errors import UserError

CAUSES = ("work", "scan", "imbalance", "memory", "merge")
# What our model's PE time beyond the matches (less lane idling) is, per design.
_EXCESS = {"loas": "scan", "sparten": "scan", "gospa": "merge", "gamma": "merge"}


def check_paper_designs(designs) -> None:
    """Raise a one-line :class:`UserError` for a design without a paper-method model."""
    for d in designs:
        if not get(d).paper:
            raise UserError(f"--design/--designs: {d!r} has no paper-method model (the LoAS authors' simulator "
                            f"covers {', '.join(PAPER)}); use --fidelity cycle")


def run_paper(design: str, inputs, cfg, econf=None) -> list:
    """Every layer of ``inputs`` (:class:`sim.report.LayerInput`) through the paper's model of
    ``design``; LoAS in ``cfg.loop_order``. Returns a list of :class:`sim.paper.PaperLayer`."""
    from sim.paper import simulate_words

    check_paper_designs([design])
    return [simulate_words(design, li.words, li.weights, li.T, loop_order=cfg.loop_order, name=li.name,
                           econf=econf) for li in inputs]


def causes(design: str, ours, paper, pes: int) -> dict:
    """Cycles of ``ours - paper`` by cause (module docstring) for one layer, or for whole-network
    sums when ``ours`` and ``paper`` are dicts of :func:`_ours_parts` / :func:`_paper_parts`."""
    o = ours if isinstance(ours, dict) else _ours_parts(ours, pes)
    p = paper if isinstance(paper, dict) else _paper_parts(paper)
    excess = o["compute"] - o["ops"] / pes - o["idle"]
    out = dict.fromkeys(CAUSES, 0.0)
    out["work"] = o["ops"] / pes - p["comps"] / 16
    out[_EXCESS[design]] = excess
    out["imbalance"] = o["idle"] - p["imbalance"]
    out["memory"] = o["cycles"] - o["compute"]
    return out


def _ours_parts(s, pes: int) -> dict:
    return {"cycles": s.cycles, "compute": s.compute_cycles, "ops": s.effectual_ops,
            "idle": s.stalls.get("imbalance", 0) / pes}


def _paper_parts(p) -> dict:
    return {"cycles": p.cycles, "comps": p.comps, "imbalance": p.imbalance}


def _row(design, layer, ours_cycles, paper_cycles, c) -> dict:
    r = {"design": design, "layer": layer, "paper_cycles": int(paper_cycles), "cycle_cycles": int(ours_cycles),
         "ratio": ours_cycles / paper_cycles if paper_cycles else None}
    for k in CAUSES:
        r[f"{k}_cycles"] = float(c[k])
        r[f"{k}_share"] = c[k] / paper_cycles if paper_cycles else None
    return r


def side_by_side(design: str, ours: list, paper: list, pes: int) -> list[dict]:
    """One row per layer and a 'network' row: paper-method cycles, ours, ratio, causes."""
    rows = [_row(design, s.layer, s.cycles, p.cycles, causes(design, s, p, pes)) for s, p in zip(ours, paper)]
    o = {k: sum(v[k] for v in map(lambda s: _ours_parts(s, pes), ours)) for k in ("cycles", "compute", "ops", "idle")}
    pp = {k: sum(v[k] for v in map(_paper_parts, paper)) for k in ("cycles", "comps", "imbalance")}
    rows.append(_row(design, "network", o["cycles"], pp["cycles"], causes(design, o, pp, pes)))
    return rows


def format_rows(rows: list[dict]) -> str:
    head = (f"{'design':<9}{'layer':<10}{'paper cyc':>11}{'cycle cyc':>11}{'ratio':>8}  "
            + "".join(f"{'+' + k:>11}" for k in CAUSES))
    lines = [head]
    for r in rows:
        ratio = "n/a" if r["ratio"] is None else f"{r['ratio']:.2f}x"
        shares = "".join(f"{'n/a' if r[k + '_share'] is None else format(r[k + '_share'], '+.2f'):>11}"
                         for k in CAUSES)
        lines.append(f"{r['design']:<9}{r['layer']:<10}{r['paper_cycles']:>11}{r['cycle_cycles']:>11}{ratio:>8}  "
                     + shares)
    lines.append("(causes: cycles each adds in our model, as a multiple of the paper-method cycles; "
                 "ratio = 1 + their sum)")
    return "\n".join(lines)


def write_fidelity_report(out_dir, rows: list[dict], meta: dict, speedups: list[dict] | None = None) -> list[Path]:
    """fidelity.csv, fidelity.json and fidelity.png (network ratio per design, stacked by cause)."""
    from sim.report import _plt, write_csv

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "fidelity.csv", out / "fidelity.json", out / "fidelity.png"]
    write_csv(files[0], rows)
    files[1].write_text(json.dumps({**meta, "rows": rows, "speedups": speedups or []}, indent=2) + "\n")
    plt = _plt()
    net = [r for r in rows if r["layer"] == "network" and r["paper_cycles"]]
    designs = list(dict.fromkeys(r["design"] for r in rows))
    layer_rows = [r for r in rows if r["layer"] != "network" and r["design"] == designs[0]]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4), gridspec_kw={"width_ratios": [1, 2]})
    for ax, group, labels in ((axes[0], net, [r["design"] for r in net]),
                              (axes[1], layer_rows, [r["layer"] for r in layer_rows])):
        bottom_pos = [1.0] * len(group)
        bottom_neg = [1.0] * len(group)
        ax.bar(labels, [1.0] * len(group), color="lightgrey", label="paper method")
        for k in CAUSES:
            vals = [r[f"{k}_share"] or 0.0 for r in group]
            pos = [max(v, 0.0) for v in vals]
            neg = [min(v, 0.0) for v in vals]
            ax.bar(labels, pos, bottom=bottom_pos, label=k)
            ax.bar(labels, neg, bottom=bottom_neg, color=ax.patches[-1].get_facecolor())
            bottom_pos = [b + v for b, v in zip(bottom_pos, pos)]
            bottom_neg = [b + v for b, v in zip(bottom_neg, neg)]
        ax.plot(labels, [r["ratio"] or 0.0 for r in group], "kD", label="ratio (net)")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.tick_params(axis="x", rotation=45)
        ax.set_ylabel("cycle-level / paper-method cycles")
    axes[0].set_title("whole network, by design")
    axes[1].set_title(f"per layer: {designs[0]}")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"cycle-level vs paper method: {meta.get('workload', '')}")
    fig.tight_layout()
    fig.savefig(files[2], dpi=120)
    plt.close(fig)
    return files


def speedup_rows(paper: dict, ours: dict | None, layers: list[str]) -> list[dict]:
    """LoAS over each baseline per layer and for the network, in either fidelity (ours may be None).
    ``paper`` / ``ours`` map design -> list of per-layer results (``cycles``, ``energy``)."""
    from sim.paper import paper_totals
    from sim.report import totals

    def ratios(res: dict, d: str, i: int | None, total, energy: str):
        """(baseline / LoAS cycles, baseline / LoAS energy) of layer i, or of the network (i None)."""
        if i is None:
            lo, bo = total(res["loas"]), total(res[d])
            cl, cd, el, ed = lo["cycles"], bo["cycles"], lo["energy"], bo["energy"]
        else:
            lo, bo = res["loas"][i], res[d][i]
            cl, cd, el, ed = lo.cycles, bo.cycles, getattr(lo, energy), getattr(bo, energy)
        return (cd / cl if cl else None), (ed / el if el else None)

    rows = []
    for d in paper:
        if d == "loas":
            continue
        for i, name in enumerate([*layers, "network"]):
            at = None if name == "network" else i
            sp, ee = ratios(paper, d, at, paper_totals, "energy")
            r = {"baseline": d, "layer": name, "paper_speedup": sp, "paper_energy_efficiency": ee}
            if ours is not None:
                sp, ee = ratios(ours, d, at, totals, "energy_total")
                r.update(cycle_speedup=sp, cycle_energy_efficiency=ee)
            rows.append(r)
    return rows


def format_speedups(rows: list[dict]) -> str:
    both = "cycle_speedup" in rows[0]
    head = f"{'baseline':<9}{'layer':<10}{'paper speedup':>15}{'paper energy':>14}"
    if both:
        head += f"{'cycle speedup':>15}{'cycle energy':>14}"
    lines = [head]

    def f(v):
        return "n/a" if v is None else f"{v:.2f}x"

    for r in rows:
        line = f"{r['baseline']:<9}{r['layer']:<10}{f(r['paper_speedup']):>15}{f(r['paper_energy_efficiency']):>14}"
        if both:
            line += f"{f(r['cycle_speedup']):>15}{f(r['cycle_energy_efficiency']):>14}"
        lines.append(line)
    return "\n".join(lines)


def format_paper_layers(paper: list, total: dict) -> str:
    """The paper method's per-layer figures (``loas sim --fidelity paper``)."""
    lines = [f"{'layer':<18}{'cycles':>11}{'comps':>12}{'DRAM KB':>12}{'SRAM KB':>12}{'hit_w':>10}{'miss_w':>8}"
             f"{'hit_x':>10}{'miss_x':>8}{'energy':>14}"]
    for p in paper:
        lines.append(f"{p.layer:<18}{p.cycles:>11}{p.comps:>12}{p.total_dram_kb:>12.2f}{p.total_sram_kb:>12.2f}"
                     f"{p.hit_w:>10}{p.miss_w:>8}{p.hit_x:>10}{p.miss_x:>8}{p.energy:>14.1f}")
    t = total
    lines.append(f"{'total':<18}{t['cycles']:>11}{t['comps']:>12}{t['total_dram_kb']:>12.2f}"
                 f"{t['total_sram_kb']:>12.2f}{'':>36}{t['energy']:>14.1f}")
    lines.append("(energy in the script's mixed units: compare designs by ratio)")
    return "\n".join(lines)


def write_paper_report(out_dir, paper: dict, speedups: list[dict], meta: dict) -> list[Path]:
    """paper.csv (speedups per layer and network) and paper.json (also every design's layers)."""
    from sim.report import write_csv

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [out / "paper.csv", out / "paper.json"]
    write_csv(files[0], speedups)
    files[1].write_text(json.dumps({**meta, "speedups": speedups,
                                    "designs": {d: [p.to_dict() for p in v] for d, v in paper.items()}},
                                   indent=2) + "\n")
    return files
