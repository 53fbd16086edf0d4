"""Running designs over whole workloads, comparing them, design-space sweeps and their reports.

Outputs are plain dicts (JSON-ready), CSV tables and PNG plots (matplotlib with the Agg backend,
imported only when a plot is written).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from pathlib import Path

import numpy as np

from sim.atomic import replace_dir, write_file
from sim.config import LoASConfig, from_mapping
from sim.energy import COMPONENTS, EnergyConfig, load_energy
from sim.errors import UserError
from sim.memory import OPERANDS

# The spike layers of the LoAS VGG16 on CIFAR-10 (conv2..conv13 and the classifier): name, c_in,
# h (= w), c_out; 3x3 kernels, stride 1, padding 1; the FC layer is 512 -> 10.
VGG16_CIFAR = [
    ("conv2", 64, 32, 64), ("conv3", 64, 16, 128), ("conv4", 128, 16, 128), ("conv5", 128, 8, 256),
    ("conv6", 256, 8, 256), ("conv7", 256, 8, 256), ("conv8", 256, 4, 512), ("conv9", 512, 4, 512),
    ("conv10", 512, 4, 512), ("conv11", 512, 2, 512), ("conv12", 512, 2, 512), ("conv13", 512, 2, 512),
]
VGG16_FC = ("fc1", 512, 10)


class SweepError(UserError):
    """A sweep parameter is unknown or has an invalid value."""


@dataclasses.dataclass(frozen=True)
class LayerInput:
    """One layer's operands, as every design consumes them."""

    name: str
    words: np.ndarray  # uint16 (M, K)
    weights: np.ndarray  # int8 (K, N)
    T: int
    out_words: np.ndarray | None = None


def vgg16_shapes():
    """(name, M, K, N) of the VGG16 CIFAR-10 spike layers in GEMM form."""
    out = [(n, h * h, c_in * 9, c_out) for n, c_in, h, c_out in VGG16_CIFAR]
    out.append((VGG16_FC[0], 1, VGG16_FC[1], VGG16_FC[2]))
    return out


def synthetic_inputs(T: int = 4, *, silent_ratio: float = 0.74, weight_density: float = 0.0177,
                     seed: int = 0, shapes=None, bernoulli: float | None = None) -> list[LayerInput]:
    """Random layers with VGG16's shapes (or `shapes`) at the LoAS paper's densities (Table II:
    74 % silent neurons, 98.23 % weight sparsity). With ``bernoulli=p`` every spike bit fires
    independently with probability p instead (silent ratio (1-p)^T)."""
    from sim.synthetic import random_weights, random_words

    rng = np.random.default_rng(seed)
    layers = []
    for name, M, K, N in shapes or vgg16_shapes():
        if bernoulli is None:
            words = random_words(rng, (M, K), T, silent_ratio)
        else:
            bits = rng.random((T, M, K)) < bernoulli
            words = (bits.astype(np.uint16) << np.arange(T, dtype=np.uint16)[:, None, None]).sum(0, dtype=np.uint16)
        layers.append(LayerInput(name, words, random_weights(rng, (K, N), weight_density), T))
    return layers


def workload_inputs(workload, *, sample: int = 0, layer: str | None = None) -> list[LayerInput]:
    """The layers of a trace workload (name or directory) as :class:`LayerInput`."""
    from sim.trace import load_workload

    wl = load_workload(workload)
    layers = [wl.layer(layer)] if layer else list(wl.layers())
    return [LayerInput(ly.name, ly.words(sample), ly.weights_kn(), ly.T, ly.expected(sample)) for ly in layers]


def run_design(design: str, inputs: list[LayerInput], cfg: LoASConfig, econf: EnergyConfig | None = None):
    """Simulate every layer on one design; returns a list of :class:`~sim.result.LayerSim`."""
    from sim.designs import simulate

    econf = econf or load_energy()
    return [simulate(design, li.words, li.weights, cfg, T=li.T, out_words=li.out_words, name=li.name,
                     econf=econf) for li in inputs]


def check_timesteps(inputs: list[LayerInput], cfg: LoASConfig, source: str = "config") -> None:
    for li in inputs:
        if li.T > cfg.timesteps:
            raise UserError(f"{source}: key 'timesteps': the hardware is built for {cfg.timesteps} timesteps "
                            f"but layer {li.name} has T={li.T}")


def check_inputs(inputs: list[LayerInput], cfg: LoASConfig, source: str = "config", designs=("loas",)) -> None:
    """Before the work of a cycle-level run: the layers' T (:func:`check_timesteps`) and, when LoAS is
    among ``designs``, its chip (:func:`sim.loas.build_chip`) and every layer's fit
    on it; each refusal is one line (:class:`~sim.errors.UserError`)."""
    check_timesteps(inputs, cfg, source)
    if "loas" not in designs:
        return
    from sim.loas import build_chip
    from sim.memory import check_operands_fit

    chip = build_chip(cfg, source)
    for li in inputs:
        check_operands_fit(li.name, li.words, li.weights, chip)


def totals(sims) -> dict:
    """Whole-network figures of a list of LayerSim."""
    energy = {c: float(sum(s.energy[c] for s in sims)) for c in COMPONENTS}
    cycles = int(sum(s.cycles for s in sims))
    clock = sims[0].clock_mhz if sims else 1.0
    return {
        "cycles": cycles,
        "compute_cycles": int(sum(s.compute_cycles for s in sims)),
        "effectual_ops": int(sum(s.effectual_ops for s in sims)),
        "sram_bytes": int(sum(s.sram_bytes for s in sims)),
        "dram_bytes": int(sum(s.dram_bytes for s in sims)),
        "sram": {o: int(sum(s.sram[o] for s in sims)) for o in OPERANDS},
        "dram": {o: int(sum(s.dram[o] for s in sims)) for o in OPERANDS},
        "energy": float(sum(energy.values())),
        "energy_breakdown": energy,
        "time_s": cycles / (clock * 1e6),
        "pe_utilization": (float(sum(np.mean(s.pe_busy) for s in sims)) / cycles) if cycles else 0.0,
    }


def sim_report(design: str, sims, cfg: LoASConfig, workload: str) -> dict:
    """The JSON of `loas sim`: per layer and total."""
    return {"workload": workload, "design": design, "config": dataclasses.asdict(cfg),
            "layers": [s.to_dict() for s in sims], "total": totals(sims)}


def compare(results: dict) -> dict:
    """LoAS against every other design: speedup, energy efficiency, traffic ratios (baseline / LoAS),
    per layer and for the whole network. ``results`` maps design -> list of LayerSim."""
    base = results["loas"]
    lt = totals(base)
    out = {"loas": lt, "baselines": {}}
    for d, sims in results.items():
        if d == "loas":
            continue
        t = totals(sims)
        per_layer = []
        for a, b in zip(base, sims):
            per_layer.append({"layer": a.layer, "speedup": b.cycles / a.cycles,
                              "energy_efficiency": b.energy_total / a.energy_total,
                              "dram_ratio": _ratio(b.dram_bytes, a.dram_bytes),
                              "sram_ratio": _ratio(b.sram_bytes, a.sram_bytes)})
        out["baselines"][d] = {
            "speedup": t["cycles"] / lt["cycles"],
            "energy_efficiency": t["energy"] / lt["energy"],
            "dram_ratio": _ratio(t["dram_bytes"], lt["dram_bytes"]),
            "sram_ratio": _ratio(t["sram_bytes"], lt["sram_bytes"]),
            "mean_layer_speedup": float(np.mean([p["speedup"] for p in per_layer])),
            "max_layer_speedup": float(max(p["speedup"] for p in per_layer)),
            "total": t,
            "layers": per_layer,
        }
    return out


def _ratio(a, b) -> float | None:
    return a / b if b else None


def compare_rows(results: dict) -> list[dict]:
    """One CSV row per (design, layer) plus a 'total' row per design."""
    rows = []
    for d, sims in results.items():
        for s in sims:
            rows.append(_row(d, s.layer, s.cycles, s.effectual_ops, s.sram_bytes, s.dram_bytes, s.energy,
                             s.sram, s.dram))
        t = totals(sims)
        rows.append(_row(d, "total", t["cycles"], t["effectual_ops"], t["sram_bytes"], t["dram_bytes"],
                         t["energy_breakdown"], t["sram"], t["dram"]))
    base = {r["layer"]: r for r in rows if r["design"] == "loas"}
    for r in rows:
        b = base.get(r["layer"])
        r["speedup_of_loas"] = r["cycles"] / b["cycles"] if b else None
        r["energy_efficiency_of_loas"] = r["energy_pj"] / b["energy_pj"] if b else None
    return rows


def _row(design, layer, cycles, ops, sram, dram, energy, sram_by, dram_by) -> dict:
    r = {"design": design, "layer": layer, "cycles": cycles, "effectual_ops": ops, "sram_bytes": sram,
         "dram_bytes": dram, "energy_pj": float(sum(energy.values()))}
    r.update({f"energy_{c}_pj": float(energy[c]) for c in COMPONENTS})
    r.update({f"sram_{o}": int(sram_by[o]) for o in OPERANDS})
    r.update({f"dram_{o}": int(dram_by[o]) for o in OPERANDS})
    return r


def write_csv(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    _write_text(path, buf.getvalue())


def _write_text(path: Path, text: str) -> None:
    write_file(Path(path), text)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


COMPARE_FILES = ("compare.csv", "compare.json", "speedup.png", "energy_breakdown.png", "layer_speedup.png")
SWEEP_FILES = ("sweep.csv", "sweep.parquet", "sweep.json", "sweep.png")
# replace_dir / check_target arguments of a compare report directory (which --fidelity also
# writes its fidelity.* and paper.* files into)
COMPARE_OWNED = COMPARE_FILES + ("fidelity.csv", "fidelity.json", "fidelity.png", "paper.csv", "paper.json")
COMPARE_TARGET = dict(what="compare report", owned=COMPARE_OWNED.__contains__)


def write_compare_report(out_dir, results: dict, comparison: dict, meta: dict) -> list[Path]:
    """CSV, JSON and three PNGs (speedup bars, energy breakdown, per-layer speedup) in out_dir.

    The report is written whole (:func:`sim.atomic.replace_dir`): built beside ``out_dir`` and
    swapped in with one rename, one writer at a time; a directory holding other files is refused."""
    out = Path(out_dir)
    with replace_dir(out, **COMPARE_TARGET) as tmp:
        _compare_files(Path(tmp), results, comparison, meta)
    return [out / n for n in COMPARE_FILES]


def _compare_files(out: Path, results: dict, comparison: dict, meta: dict) -> None:
    files = [out / n for n in COMPARE_FILES]
    write_csv(files[0], compare_rows(results))
    files[1].write_text(json.dumps({**meta, **comparison}, indent=2) + "\n")
    plt = _plt()
    names = list(comparison["baselines"])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    sp = [comparison["baselines"][d]["speedup"] for d in names]
    ee = [comparison["baselines"][d]["energy_efficiency"] for d in names]
    x = np.arange(len(names))
    ax.bar(x - 0.2, sp, 0.4, label="speedup")
    ax.bar(x + 0.2, ee, 0.4, label="energy efficiency")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(x, names)
    ax.set_ylabel("LoAS over baseline (x)")
    ax.set_title(f"LoAS vs baselines: {meta.get('workload', '')}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(files[2], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    designs = list(results)
    bottom = np.zeros(len(designs))
    for c in COMPONENTS:
        vals = np.array([totals(results[d])["energy_breakdown"][c] for d in designs]) / 1e6
        ax.bar(designs, vals, bottom=bottom, label=c)
        bottom += vals
    ax.set_ylabel("energy (uJ)")
    ax.set_title("energy breakdown, whole network")
    ax.legend()
    fig.tight_layout()
    fig.savefig(files[3], dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(results["loas"])), 3.5))
    layers = [s.layer for s in results["loas"]]
    x = np.arange(len(layers))
    w = 0.8 / max(1, len(names))
    for i, d in enumerate(names):
        ax.bar(x + (i - (len(names) - 1) / 2) * w, [p["speedup"] for p in comparison["baselines"][d]["layers"]], w,
               label=d)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(x, layers, rotation=45, ha="right")
    ax.set_ylabel("LoAS speedup (x)")
    ax.set_title("per-layer speedup of LoAS")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(files[4], dpi=120)
    plt.close(fig)


# Sweeps ------------------------------------------------------------------------------------------
SWEEP_ALIASES = {"T": "timesteps", "P": "pes"}
DATA_PARAMS = ("weight_density", "silent_ratio")


def parse_params(specs: list[str]) -> dict:
    """['pes=4,8', 'buffer.capacity_kb=128,256'] -> {'pes': [4, 8], ...}; keys validated later.

    A key given twice (also through an alias: ``T`` and ``timesteps``) is an error naming both."""
    import yaml

    params, given = {}, {}
    for spec in specs:
        key, eq, vals = spec.partition("=")
        key = SWEEP_ALIASES.get(key.strip(), key.strip())
        if not eq or not key or not vals.strip():
            raise SweepError(f"--param {spec!r}: expected NAME=V1,V2,...")
        if key in given:
            raise SweepError(f"--param {given[key]!r} and --param {spec!r}: the same key '{key}' twice; "
                             f"give its values once, comma-separated")
        given[key] = spec
        try:
            params[key] = [yaml.safe_load(v) for v in vals.split(",")]
        except yaml.YAMLError:
            raise SweepError(f"--param {spec!r}: values must be numbers or words") from None
    return params


def check_grid(params: dict, max_points: int) -> int:
    """The number of points of the grid ``params``; refused (before any point is built) above
    ``max_points``, naming the size so the user can raise ``--max-points`` knowingly."""
    import math

    n = math.prod(len(v) for v in params.values())
    if n > max_points:
        sizes = " x ".join(f"{len(v)} {k}" for k, v in params.items())
        raise SweepError(f"--param: the grid has {n} points ({sizes}), more than --max-points {max_points}; "
                         f"give a larger --max-points to run it")
    return n


def point_config(base: LoASConfig, point: dict, source: str = "--param") -> LoASConfig:
    """Apply one sweep point (dotted keys) to the base config, validated like a YAML file."""
    data = dataclasses.asdict(base)
    for key, value in point.items():
        if key in DATA_PARAMS:
            continue
        node, parts = data, key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise SweepError(f"{source}: key '{key}': unknown configuration key")
            node = node[p]
        if parts[-1] not in node:
            raise SweepError(f"{source}: key '{key}': unknown configuration key (known: {', '.join(data)}, "
                             f"{', '.join(DATA_PARAMS)})")
        node[parts[-1]] = value
    return from_mapping(LoASConfig, data, path=source)


def _vgg16_layer(layer):
    shapes = vgg16_shapes()
    if layer is None:
        return shapes
    pick = [s for s in shapes if s[0] == layer]
    if not pick:
        raise SweepError(f"--layer: no layer {layer!r} in the synthetic VGG16; it has {', '.join(s[0] for s in shapes)}")
    return pick


FIGURES = ("cycles", "energy_pj", "dram_bytes", "sram_bytes", "effectual_ops", "pe_busy_mean")


def layer_point(layer: LayerInput, cfg: LoASConfig, designs: tuple, econf: EnergyConfig) -> dict:
    """One sweep point on one layer (runs on a Dask worker): per design, ``<design>.<figure>`` for
    every figure in :data:`FIGURES` (a flat row for the result store)."""
    row = {}
    for d in designs:
        s = run_design(d, [layer], cfg, econf)[0]
        row.update({f"{d}.cycles": int(s.cycles), f"{d}.energy_pj": float(s.energy_total),
                    f"{d}.dram_bytes": int(s.dram_bytes), f"{d}.sram_bytes": int(s.sram_bytes),
                    f"{d}.effectual_ops": int(s.effectual_ops), f"{d}.pe_busy_mean": float(np.mean(s.pe_busy))})
    return row


def simulate_layer(design: str, layer: LayerInput, cfg: LoASConfig, econf: EnergyConfig):
    """One design on one layer (runs on a Dask worker): its :class:`~sim.loas.LayerSim`."""
    return run_design(design, [layer], cfg, econf)[0]


@dataclasses.dataclass
class SweepResult:
    """Rows (one per point and workload, whole-network figures), failed layer points with their
    parameters, and how many layer points were computed now or found in the store."""

    rows: list
    failures: list
    computed: int
    cached: int
    seconds: float


SYNTHETIC = "synthetic"


def sweep(params: dict, *, base: LoASConfig, designs=("loas", "sparten"), workloads=None, sample: int = 0,
          seed: int = 0, layer: str | None = None, progress: bool = True, out=None, econf=None,
          scheduler: str | None = None, workers: int | None = None) -> SweepResult:
    """The cartesian product of `params` over every workload (None: the synthetic VGG16 at the
    paper's densities) and every layer, one task per (point, workload, layer) on the Dask engine
    (:mod:`sim.dist`). With `out`, each finished layer point is stored at once under
    ``out/store`` and a rerun computes only the points missing there."""
    import itertools

    from sim import dist

    econf = econf or load_energy()
    designs = tuple(designs) if "loas" in designs else ("loas",) + tuple(designs)
    workloads = list(workloads or [])
    keys = list(params)
    points = [dict(zip(keys, combo)) for combo in itertools.product(*(params[k] for k in keys))]
    cfgs = []
    from sim.loas import build_chip

    for p in points:  # fail fast, before any work, on a bad key or value
        cfgs.append(point_config(base, p))
        build_chip(cfgs[-1], "--param")
        for k in DATA_PARAMS:
            if k in p and not (isinstance(p[k], (int, float)) and 0 <= p[k] <= 1):
                raise SweepError(f"--param: key '{k}': must be a number in [0, 1], got {p[k]!r}")
            if k in p and workloads:
                raise SweepError(f"--param: key '{k}': only applies to the synthetic workload (no --workload)")
    # Operands, built once on the client and sent to the workers (scattered) once each.
    operands = {}  # (workload name, synthetic spec) -> [(LayerInput as dist.Shared, content digest)]

    def layers_of(name, spec):
        if (name, spec) not in operands:
            if name == SYNTHETIC:
                T, kw = spec
                lis = synthetic_inputs(T, seed=seed, shapes=_vgg16_layer(layer), **dict(kw))
            else:
                lis = workload_inputs(name, sample=sample, layer=layer)
            operands[name, spec] = [(dist.Shared(li), dist.digest(li)) for li in lis]
        return operands[name, spec]

    tasks, groups = [], []  # groups: (point, workload, [task keys]) in table order
    version = dist.code_version()
    for p, cfg in zip(points, cfgs):
        if workloads:
            pairs = [(w, None) for w in workloads]
        else:
            pairs = [(SYNTHETIC, (cfg.timesteps, tuple((k, p[k]) for k in DATA_PARAMS if k in p)))]
        for w, spec in pairs:
            lis = layers_of(w, spec)
            check_inputs([s.value for s, _ in lis], cfg, f"--param (workload {w})")
            tkeys = []
            for shared, dg in lis:
                key = dist.digest(dg, cfg, designs, econf, version)
                label = {**p, "workload": str(w), "layer": shared.value.name}
                tasks.append(dist.Task(key, layer_point, (shared, cfg, designs, econf), label))
                tkeys.append(key)
            groups.append((p, str(w), tkeys))
    store = dist.ResultStore(Path(out) / "store") if out is not None else None
    oc = dist.run_tasks(tasks, store=store, scheduler=scheduler, workers=workers, progress=progress,
                        desc="sweep")
    rows = []
    for p, w, tkeys in groups:
        parts = [oc.results.get(k) for k in tkeys]
        if any(r is None for r in parts):
            continue
        tot = {f"{d}.{f}": sum(r[f"{d}.{f}"] for r in parts) for d in designs for f in FIGURES}
        cyc, en = tot["loas.cycles"], tot["loas.energy_pj"]
        row = {**p, "workload": w, "cycles": cyc, "energy_pj": en, "dram_bytes": tot["loas.dram_bytes"],
               "sram_bytes": tot["loas.sram_bytes"], "effectual_ops": tot["loas.effectual_ops"],
               "pe_utilization": tot["loas.pe_busy_mean"] / cyc if cyc else 0.0}
        for d in designs[1:]:
            row[f"speedup_vs_{d}"] = tot[f"{d}.cycles"] / cyc
            row[f"energy_eff_vs_{d}"] = tot[f"{d}.energy_pj"] / en
        rows.append(row)
    return SweepResult(rows, oc.failures, oc.computed, oc.cached, oc.seconds)


def compare_workloads(workloads: dict, designs, cfg: LoASConfig, econf: EnergyConfig, *, progress: bool = True,
                      scheduler: str | None = None, workers: int | None = None):
    """Every design on every layer of every workload (``name -> [LayerInput]``) on the Dask engine.
    Returns ``({name: {design: [LayerSim]}}`` for the workloads that fully ran, failures)."""
    from sim import dist

    designs = ["loas", *[d for d in designs if d != "loas"]]
    version = dist.code_version()
    tasks, index = [], {}
    for name, lis in workloads.items():
        for li in lis:
            shared, dg = dist.Shared(li), dist.digest(li)
            for d in designs:
                key = dist.digest(dg, d, cfg, econf, version)
                tasks.append(dist.Task(key, simulate_layer, (d, shared, cfg, econf),
                                       {"workload": name, "design": d, "layer": li.name}))
                index[name, d, li.name] = key
    oc = dist.run_tasks(tasks, scheduler=scheduler, workers=workers, progress=progress, desc="compare")
    out = {}
    for name, lis in workloads.items():
        res = {d: [oc.results.get(index[name, d, li.name]) for li in lis] for d in designs}
        if all(s is not None for sims in res.values() for s in sims):
            out[name] = res
    return out, oc.failures


# check_target / replace_dir arguments of a sweep report directory (it also holds the result store)
SWEEP_TARGET = dict(what="sweep report", owned=(SWEEP_FILES + ("store",)).__contains__)


def write_sweep_report(out_dir, rows: list[dict], params: dict, failures=()) -> list[Path]:
    """sweep.csv, sweep.parquet, sweep.json (with the failed points) and sweep.png (cycles and
    speedups against the first parameter, one line per value of the others and per workload).

    The report is written whole (:func:`sim.atomic.replace_dir`), the sweep's result store
    (``store/``, sim/dist.py) carried over into the new folder, so a rerun still resumes from it."""
    out = Path(out_dir)
    with replace_dir(out, **SWEEP_TARGET, keep=("store",)) as tmp:
        _sweep_files(Path(tmp), rows, params, failures)
    return [out / n for n in SWEEP_FILES]


def _sweep_files(out: Path, rows: list[dict], params: dict, failures) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = [out / n for n in SWEEP_FILES]
    write_csv(files[0], rows)
    table = pa.Table.from_pylist(rows)
    write_file(files[1], lambda f: pq.write_table(table, f))
    _write_text(files[2], json.dumps({"params": params, "rows": rows, "failures": list(failures)}, indent=2) + "\n")
    plt = _plt()
    keys = list(params)
    xkey, others = keys[0], keys[1:]
    if len({r["workload"] for r in rows}) > 1:
        others = [*others, "workload"]
    spk = [k for k in rows[0] if k.startswith("speedup_vs_")]
    fig, axes = plt.subplots(1, 1 + bool(spk), figsize=(10 if spk else 5, 3.5))
    axes = np.atleast_1d(axes)
    groups = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in others), []).append(r)
    for g, rs in groups.items():
        label = ", ".join(f"{k}={v}" for k, v in zip(others, g)) or "loas"
        xs = [str(r[xkey]) for r in rs]
        axes[0].plot(xs, [r["cycles"] for r in rs], marker="o", label=label)
        for k in spk:
            axes[1].plot(xs, [r[k] for r in rs], marker="o", label=f"{label} {k[len('speedup_vs_'):]}")
    axes[0].set_xlabel(xkey)
    axes[0].set_ylabel("LoAS cycles")
    axes[0].legend(fontsize=7)
    if spk:
        axes[1].set_xlabel(xkey)
        axes[1].set_ylabel("LoAS speedup (x)")
        axes[1].legend(fontsize=7)
    fig.tight_layout()
    write_file(files[3], lambda f: fig.savefig(f, format="png", dpi=120))
    plt.close(fig)
