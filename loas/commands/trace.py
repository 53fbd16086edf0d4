"""`loas trace stats` and `loas golden`: numpy-only commands on trace workloads."""

from __future__ import annotations

from loas.commands import add_json, emit, group
from loas.options import add_layer, add_sample, add_workload


def register(sub):
    g = group(sub, "trace")
    p = g.add_parser("stats", help="per-layer and whole-network statistics of a workload")
    add_workload(p)
    add_sample(p)
    add_json(p)
    p.set_defaults(func=cmd_stats)

    p = g.add_parser("verify", help="check every layer's expected outputs against the golden model")
    add_workload(p)
    add_json(p)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("golden", help="run one layer through the golden model")
    add_workload(p)
    add_layer(p, required=True)
    add_sample(p)
    add_json(p)
    p.set_defaults(func=cmd_golden)


def layer_stats(layer, sample: int = 0) -> dict:
    """Trace statistics of one layer (no arithmetic beyond counting): ``spike_sparsity`` and
    ``silent_ratio`` on the feature map (C x H x W), ``table2`` on LoAS Table II's basis (the
    im2col matrix with padding, :mod:`sim.stats`)."""
    import numpy as np

    from sim.stats import table2_counts, table2_ratios

    g = layer.geometry
    words = layer.words(sample)
    w = layer.weights_kn()
    bits = layer.T * words.size
    spikes = int(np.bitwise_count(words).sum(dtype=np.int64))
    # Statistics of the neurons themselves (the C x H x W input), not of im2col copies.
    img = layer.spike_words[sample]
    img_spikes = int(np.bitwise_count(img).sum(dtype=np.int64))
    return {
        "layer": layer.name,
        "T": layer.T,
        "M": g.M,
        "K": g.K,
        "N": g.N,
        "neurons": int(img.size),
        "spike_sparsity": 1.0 - img_spikes / (layer.T * img.size),
        "silent_ratio": float((img == 0).mean()),
        "gemm_spike_sparsity": 1.0 - spikes / bits,
        "table2_counts": (t2 := table2_counts(words)),
        "table2": table2_ratios(t2, layer.T),
        "weight_sparsity": float((w == 0).mean()),
        "weights": int(w.size),
        "n_mask": layer.n_mask,
    }


def workload_stats(wl, sample: int = 0) -> dict:
    from sim.stats import pool, table2_ratios

    layers = [layer_stats(layer, sample) for layer in wl.layers()]
    neurons = sum(s["neurons"] for s in layers)
    weights = sum(s["weights"] for s in layers)
    total = {
        "T": wl.T,
        "layers": len(layers),
        "neurons": neurons,
        # Feature-map figures weight each layer by its neuron count, the weight sparsity by its weight
        # count; Table II's figures pool the im2col elements of every layer.
        "spike_sparsity": sum(s["spike_sparsity"] * s["neurons"] for s in layers) / neurons,
        "silent_ratio": sum(s["silent_ratio"] * s["neurons"] for s in layers) / neurons,
        "table2": table2_ratios(pool([s["table2_counts"] for s in layers]), wl.T),
        "weight_sparsity": sum(s["weight_sparsity"] * s["weights"] for s in layers) / weights,
    }
    return {"workload": wl.name, "path": str(wl.path), "sample": sample, "layers": layers, "total": total}


def cmd_stats(args) -> int:
    from sim.trace import load_workload

    wl = load_workload(args.workload)
    res = workload_stats(wl, args.sample)
    def row(name, m, k, s):
        t2 = s["table2"]
        return (f"{name:<18}{m:>6}{k:>6}{s['spike_sparsity']:>11.2%}{s['silent_ratio']:>9.2%}  "
                f"{t2['spike_sparsity']:>11.2%}{t2['silent_ratio']:>9.2%}{t2['silent_ratio_strong']:>9.2%}"
                f"{s['weight_sparsity']:>12.2%}")

    lines = [f"workload {res['workload']} ({res['path']}), T={wl.T}, sample {args.sample}",
             f"{'':<30}{'feature map (CxHxW)':>20}  {'Table II (im2col TxMxK, padding)':>34}",
             f"{'layer':<18}{'M':>6}{'K':>6}{'spike sp.':>11}{'silent':>9}  {'spike sp.':>11}{'silent':>9}"
             f"{'strong':>9}{'weight sp.':>12}"]
    lines += [row(s["layer"], s["M"], s["K"], s) for s in res["layers"]]
    lines.append(row("network", "", "", res["total"]))
    lines.append("(network: feature-map figures weighted by neurons; Table II's pooled by im2col elements; "
                 "strong: words with one spike count as silent)")
    emit(args, res, lines)
    return 0


def golden_layer(layer, sample: int = 0):
    from sim.golden import run_layer

    return run_layer(layer.words(sample), layer.weights_kn(), layer.bias, layer.lif, layer.T,
                     n_mask=layer.n_mask, context=str(layer.path),
                     residual=layer.residual_current(sample))


def cmd_golden(args) -> int:
    from sim.trace import load_workload

    wl = load_workload(args.workload)
    layer = wl.layer(args.layer)
    res = golden_layer(layer, args.sample)
    expected_ok = bool((res.out_words == layer.expected(args.sample)).all())
    out = {
        "workload": wl.name,
        "layer": layer.name,
        "sample": args.sample,
        **res.stats.to_dict(),
        "output_sha256": res.digest(),
        "matches_expected": expected_ok,
    }
    emit(args, out, [f"{k:>22}: {v}" for k, v in out.items()])
    return 0 if expected_ok else 1


def cmd_verify(args) -> int:
    from sim.trace import load_workload

    wl = load_workload(args.workload)
    rows = []
    for layer in wl.layers():
        for s in range(layer.samples):
            res = golden_layer(layer, s)
            bad = int((res.out_words != layer.expected(s)).sum())
            rows.append({"layer": layer.name, "sample": s, "mismatched_words": bad})
    ok = all(r["mismatched_words"] == 0 for r in rows)
    lines = [f"{r['layer']:<10} sample {r['sample']}: {'PASS' if not r['mismatched_words'] else 'FAIL'}"
             f" ({r['mismatched_words']} mismatched words)" for r in rows]
    emit(args, {"workload": wl.name, "match": ok, "layers": rows}, lines + ["PASS" if ok else "FAIL"])
    return 0 if ok else 1
