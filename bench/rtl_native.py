"""RTL simulation speed of the native-speed testbench (hw/harness.py): simulated cycles per second
and wall time per layer of the 16-TPPE core (paper configuration) on the default workload (every
layer, every sample) and on VGG16 layers with the real LoAS spikes, under Verilator (and Icarus on
a small core), build times apart; plus the record of the random-layer regression when one ran.

Usage: python bench/rtl_native.py [--vgg16-layers conv2 conv3 conv4] [--icarus-count N] [--no-vgg16]
VGG16: traces/vgg16 or build/traces/vgg16 when present, else imported from
../shared/data/prosperity-loas (`loas trace import-prosperity`), else skipped with the reason.
Writes bench/results/rtl_native.json and .md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim.params import Capacity, CoreParams  # noqa: E402
from sim.trace import TRACES_DIR, load_workload  # noqa: E402

PKL = ROOT.parent / "shared" / "data" / "prosperity-loas" / "vgg16_cifar10_loas.pkl"
for cand in (Path("/work/shared/data/prosperity-loas/vgg16_cifar10_loas.pkl"),):
    if not PKL.exists() and cand.exists():
        PKL = cand


def _vgg16():
    for d in (TRACES_DIR / "vgg16", ROOT / "build" / "traces" / "vgg16"):
        if (d / "manifest.yaml").exists():
            return d, None
    if not PKL.exists():
        return None, f"no VGG16 workload and no {PKL} to import it from"
    d = ROOT / "build" / "traces" / "vgg16"
    print(f"importing the LoAS VGG16 spikes into {d} (loas trace import-prosperity)", flush=True)
    subprocess.run([sys.executable, "-m", "loas.cli", "trace", "import-prosperity", str(PKL), "--name", "vgg16",
                    "--out", str(d), "--threads", "1"], check=True, cwd=ROOT)
    return d, None


def _run(wl_path, items, params, simulator="verilator"):
    from hw.cosim import run_native

    wl = load_workload(wl_path)
    caps = [Capacity.fit(wl.layer(n).words(s), wl.layer(n).weights_kn(), wl.layer(n).bias) for n, s in items]
    cap = Capacity(**{f.name: max(getattr(c, f.name) for c in caps) for f in dataclasses.fields(Capacity)})
    t0 = time.perf_counter()
    out = run_native(params, cap, {"kind": "workload", "workload": str(Path(wl_path).resolve()), "items": items},
                     simulator=simulator, stop_on_fail=False)
    rows = [{k: r[k] for k in ("layer", "sample", "M", "K", "N", "pass", "rtl_cycles", "model_cycles",
                               "load_cycles", "sim_cycles", "sim_s", "sim_cycles_per_s", "sim_cpu_s",
                               "sim_cycles_per_cpu_s", "wall_s", "dram_bytes")}
            for r in out["results"]]
    sim_c, sim_s = sum(r["sim_cycles"] for r in rows), sum(r["sim_s"] for r in rows)
    cpu_s = sum(r["sim_cpu_s"] for r in rows)
    return {"sim_cpu_s": round(cpu_s, 3), "sim_cycles_per_cpu_s": round(sim_c / cpu_s) if cpu_s else None,
            "workload": wl.name, "simulator": simulator, "pes": params.pes, "capacity": dataclasses.asdict(cap),
            "build_dir": out["build_dir"], "build": out["build"], "rows": rows,
            "all_pass": all(r["pass"] for r in rows), "sim_cycles": sim_c, "sim_s": round(sim_s, 3),
            "sim_cycles_per_s": round(sim_c / sim_s) if sim_s else None,
            "wall_s_after_build": round(time.perf_counter() - t0 - out["build_s"], 2)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vgg16-layers", nargs="+", default=["conv2", "conv3", "conv4"])
    ap.add_argument("--no-vgg16", action="store_true")
    ap.add_argument("--icarus-count", type=int, default=4, help="random layers on the small Icarus core")
    args = ap.parse_args()
    res = {"config": "paper configuration: P=16, T=4, W=128, 16 laggy adders, FIFO 8, lookahead 4, 4 result slots",
           "command": "python bench/rtl_native.py", "machine": "2 shared cores"}
    paper = CoreParams()
    wl = load_workload("default")
    items = [(n, s) for n in wl.layer_names for s in range(wl.layer(n).samples)]
    print(f"== default workload, {len(items)} (layer, sample) runs, Verilator, P=16", flush=True)
    res["default"] = _run(wl.path, items, paper)
    if args.no_vgg16:
        res["vgg16"] = {"skipped": "--no-vgg16"}
    else:
        d, why = _vgg16()
        if d is None:
            res["vgg16"] = {"skipped": why}
            print(f"VGG16 skipped: {why}")
        else:
            print(f"== VGG16 {' '.join(args.vgg16_layers)}, Verilator, P=16", flush=True)
            res["vgg16"] = _run(d, [(n, 0) for n in args.vgg16_layers], paper)
    if args.icarus_count:
        from hw.cosim import run_native, simulator_available

        if simulator_available("icarus"):
            print("== Icarus, random layers on a 1-lane core", flush=True)
            params, cap = CoreParams(pes=1, lookahead=2), Capacity(rows=12, cols=6, k=200, a_nnz=2400, b_nnz=1200)
            out = run_native(params, cap, {"kind": "random", "seed": 0, "start": 0, "count": args.icarus_count},
                             simulator="icarus", stop_on_fail=False)
            rows = out["results"]
            sim_c, sim_s = sum(r["sim_cycles"] for r in rows), sum(r["sim_s"] for r in rows)
            cpu_s = sum(r["sim_cpu_s"] for r in rows)
            res["icarus"] = {"sim_cpu_s": round(cpu_s, 3), "sim_cycles_per_cpu_s": round(sim_c / cpu_s) if cpu_s else None,"pes": 1, "layers": len(rows), "all_pass": all(r["pass"] for r in rows),
                             "sim_cycles": sim_c, "sim_s": round(sim_s, 3),
                             "sim_cycles_per_s": round(sim_c / sim_s) if sim_s else None, "build": out["build"]}
        else:
            res["icarus"] = {"skipped": "iverilog not installed"}
    reg = ROOT / "bench" / "results" / "rtl_regress.json"
    if reg.exists():
        res["regress"] = json.loads(reg.read_text())
    out = ROOT / "bench" / "results" / "rtl_native.json"
    out.write_text(json.dumps(res, indent=2) + "\n")
    (ROOT / "bench" / "results" / "rtl_native.md").write_text(_markdown(res))
    print(_markdown(res))
    print(f"wrote {out}")
    return 0


def _markdown(res) -> str:
    lines = ["# RTL simulation speed (native-speed testbench)", "",
             f"`{res['command']}` on {res['machine']}; {res['config']}. Simulated cycles include the in-simulator",
             "load of each layer's image (one word per cycle) and the run; cycles/s = simulated cycles / simulator wall",
             "time of the layer (no Python in it); per CPU s = per CPU second of the simulator process (the",
             "machine was shared: CPU seconds measure the simulator, wall seconds also the others). DRAM bytes: the load image's words at their memory widths (the",
             "core has no DRAM port).", ""]
    for key in ("default", "vgg16"):
        r = res.get(key)
        if not r:
            continue
        if "skipped" in r:
            lines += [f"## {key}: skipped ({r['skipped']})", ""]
            continue
        b = r["build"]
        lines += [f"## {r['workload']} (Verilator, P={r['pes']}): {r['sim_cycles_per_cpu_s']} cycles per CPU s, "
                  f"{r['sim_cycles_per_s']} cycles per wall s, all PASS: {r['all_pass']}", "",
                  f"Build: Verilog generation {b.get('generate_s')} s, Verilator + C++ {b.get('compile_s')} s "
                  f"(reused when cached). Wall after the build: {r['wall_s_after_build']} s.", "",
                  "| layer | sample | M x K x N | result | RTL cycles | model cycles | simulated cycles | cycles/CPU s | cycles/wall s | wall s | DRAM bytes |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for x in r["rows"]:
            lines.append(f"| {x['layer']} | {x['sample']} | {x['M']} x {x['K']} x {x['N']} | {'PASS' if x['pass'] else 'FAIL'} "
                         f"| {x['rtl_cycles']} | {x['model_cycles']} | {x['sim_cycles']} | {x['sim_cycles_per_cpu_s']} | {x['sim_cycles_per_s']} "
                         f"| {x['wall_s']:.2f} | {x['dram_bytes']} |")
        lines.append("")
    ic = res.get("icarus")
    if ic:
        lines += ([f"## Icarus: skipped ({ic['skipped']})", ""] if "skipped" in ic else
                  [f"## Icarus (1-lane core, {ic['layers']} random layers): {ic['sim_cycles_per_cpu_s']} cycles per CPU s, "
                   f"{ic['sim_cycles_per_s']} per wall s, "
                   f"all PASS: {ic['all_pass']}", ""])
    rg = res.get("regress")
    if rg:
        lines += [f"## Random-layer regression: {rg['layers']} layers, {rg['mismatches']} mismatches "
                  f"(seed {rg['seed']}, {len(rg['builds'])} builds, {rg['outputs_checked']} output words)", "",
                  f"`{rg.get('command', 'loas rtl regress')}`", ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
