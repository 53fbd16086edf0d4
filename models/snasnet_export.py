"""Export a SNASNet's spike layers as a trace workload (traces/README.md) and report them per cell.

The spike layers of a SNASNet are the convs whose input is LIF spikes (:meth:`SNASNet.spike_convs`):
the LIF -> conv -> BN edges of both cells, forward *and* backward, the downsampling conv and the last
linear layer (fc1 is absent: its input is average-pooled spikes). For each, the workload holds the
float model's input spikes of S samples (eval mode), the int8 weights with BN and the LIF's input gain
folded in (symmetric per-layer scale, as :meth:`models.layers._SpikeLayer.quantize`), the integer bias
and threshold, and the golden model's output words.

In a SNASNet the LIF after a conv does not see that conv alone: the conv output is summed into a node
and the next edge's LIF sees the node. The trace's P-LIF (the contract of the format) therefore
applies to each layer's own current, and ``expected_out_words`` is the golden model's output for it;
the next layer's input spikes are the network's true spikes. The workload measures what LoAS does with
the spike GEMMs of the network; it is not an end-to-end integer chain.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from sim.errors import UserError

from .layers import INPUT_GAIN, V_TH
from .snasnet import SNASNet


def capture_spike_inputs(model: SNASNet, images: torch.Tensor):
    """Run ``model`` (eval, no grad) and return logits and {layer name: input spikes [T, S, ...]}."""
    layers = model.spike_convs()
    seen: dict[str, list[torch.Tensor]] = {n: [] for n, _, _ in layers}
    hooks = [m.register_forward_pre_hook(lambda mod, inp, n=n: seen[n].append(inp[0].detach()))
             for n, m, _ in layers]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(images)
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    S, T = images.shape[0], model.T
    out = {}
    for n, xs in seen.items():
        x = torch.cat(xs).cpu()  # cell convs: T calls of [S, ...]; others: one [T*S, ...] call
        x = x.reshape(T, S, *x.shape[1:])
        if not bool(((x == 0) | (x == 1)).all()):
            raise RuntimeError(f"layer {n}: input is not binary spikes")
        out[n] = x
    return logits, out


def quantize_layer(op: nn.Module, bn: nn.Module | None):
    """int8 weight, integer bias, threshold and scale of ``op`` (+ ``bn``, eval statistics).

    BN and the LIF input gain (0.75) are folded in; the largest folded weight maps to 127.
    """
    w = op.weight.detach().double().cpu()
    b = op.bias.detach().double().cpu() if getattr(op, "bias", None) is not None else torch.zeros(w.shape[0],
                                                                                                  dtype=torch.float64)
    if bn is not None:
        inv = bn.weight.detach().double().cpu() / torch.sqrt(bn.running_var.double().cpu() + bn.eps)
        b = bn.bias.detach().double().cpu() - bn.running_mean.double().cpu() * inv + b * inv
        w = w * inv.reshape((-1,) + (1,) * (w.dim() - 1))
    w, b = INPUT_GAIN * w, INPUT_GAIN * b
    wmax = float(w.abs().max())
    scale = wmax / 127.0 if wmax > 0 else 1.0
    wq = torch.round(w / scale).clamp(-127, 127).to(torch.int8).numpy()
    bq = torch.round(b / scale).to(torch.int64).numpy()
    th = max(1, int(round(V_TH / scale)))
    return wq, bq, th, scale


def _pack(spikes: torch.Tensor) -> np.ndarray:
    from sim.fibers import pack_spikes

    return pack_spikes(spikes.to(torch.uint8).numpy())


def _loas_cycles(words, weights, T, out_words, name):
    """LoAS cycles of one sample of a layer (None and a reason when the cycle model refuses it)."""
    try:
        from sim.config import LoASConfig
        from sim.loas import simulate_layer
    except ImportError as exc:  # the cycle model is optional for the export itself
        return None, f"cycle model unavailable ({exc})"
    try:
        cfg = replace(LoASConfig(), timesteps=max(T, LoASConfig().timesteps))
        return int(simulate_layer(words, weights, cfg, T=T, out_words=out_words, name=name).cycles), None
    except (ValueError, UserError) as exc:
        return None, str(exc)


def export_snasnet(model: SNASNet, images: torch.Tensor, out_dir, *, name: str, force: bool = False,
                   **options) -> dict:
    """Write the workload of ``model`` on ``images`` to ``out_dir`` whole
    (:func:`sim.atomic.replace_dir`: built beside it, swapped in with one rename, one writer at a
    time); an existing ``out_dir`` is replaced only with ``force``. ``options`` and the report are
    those of :func:`_export_snasnet`.
    """
    from sim.atomic import check_target, replace_dir
    from sim.trace import WORKLOAD_TARGET

    check_target(out_dir, force=force, **WORKLOAD_TARGET)
    with replace_dir(out_dir, force=force, **WORKLOAD_TARGET) as stage:
        rep = _export_snasnet(model, images, stage, name=name, **options)
    rep["workload"] = str(out_dir)
    return rep


def _export_snasnet(model: SNASNet, images: torch.Tensor, out_dir, *, name: str, labels=None,
                    provenance: dict | None = None, cycles: bool = True, progress: bool = False) -> dict:
    """Write the workload of ``model`` on ``images`` (normalised ``[S, C, H, W]``) to ``out_dir``.

    Returns a report: per layer (geometry, silent ratio, spike sparsity, effectual operations, LoAS
    cycles of sample 0) and per cell (neuron-weighted silent ratio and spike sparsity, summed cycles).

    Raises
    ------
    UserError
        If T exceeds the trace format's 16 or a quantised bias leaves the int32 range.
    """
    from tqdm import tqdm

    from sim.fibers import MAX_T
    from sim.golden import BIAS_BITS, LIFParams, int_range_problem, run_layer
    from sim.trace import Geometry, im2col, write_layer, write_manifest

    if model.T > MAX_T:
        raise UserError(f"--T: the trace format holds at most {MAX_T} timesteps, got {model.T}")
    t0 = time.time()
    out_dir = Path(out_dir)
    T = model.T
    logits, spikes = capture_spike_inputs(model, images)
    modules = {n: (m, bn) for n, m, bn in model.spike_convs()}
    rows, entries = [], []
    for lname, x in tqdm(spikes.items(), desc="export", disable=not progress, leave=False):
        op, bn = modules[lname]
        wq, bq, th, scale = quantize_layer(op, bn)
        problem = int_range_problem(bq, BIAS_BITS)
        if problem:
            raise UserError(f"layer {lname}: integer bias {problem}")
        if isinstance(op, nn.Conv2d):
            g = Geometry(c_in=op.in_channels, h=x.shape[-2], w=x.shape[-1], kernel=op.kernel_size[0],
                         stride=op.stride[0], padding=op.padding[0], c_out=op.out_channels)
            words = _pack(x)
            kind = "conv"
        else:
            g = Geometry.fc(op.in_features, op.out_features)
            words = _pack(x)[:, :, None, None]
            wq = wq[:, :, None, None]
            kind = "fc"
        lif = LIFParams(th, 2)
        wkn = np.ascontiguousarray(wq.reshape(g.N, g.K).T)
        results = [run_layer(im2col(words[s], g), wkn, bq, lif, T, context=lname) for s in range(words.shape[0])]
        expected = np.stack([r.out_words for r in results])
        write_layer(out_dir / f"{lname}.npz", T=T, geometry=g, spike_words=words, weight=wq, bias=bq,
                    lif=lif, n_mask=0, expected_out_words=expected)
        entries.append((lname, kind))
        cyc, why = (_loas_cycles(im2col(words[0], g), wkn, T, expected[0], lname) if cycles
                    else (None, "not requested"))
        neurons = int(words.size)
        rows.append({
            "name": lname, "cell": lname.split(".")[0] if "." in lname else lname, "kind": kind,
            "M": g.M, "K": g.K, "N": g.N, "neurons": neurons,
            "silent_ratio": float((words == 0).mean()),
            "spike_sparsity": 1.0 - float(x.mean()),
            "weight_sparsity": float((wq == 0).mean()),
            "effectual_ops": int(results[0].stats.effectual_ops),
            "threshold": th, "scale": scale, "loas_cycles": cyc,
            **({"cycles_note": why} if why else {}),
        })
    cells = {}
    for r in rows:
        c = cells.setdefault(r["cell"], {"cell": r["cell"], "layers": 0, "neurons": 0, "_silent": 0.0,
                                         "_sparse": 0.0, "loas_cycles": 0, "effectual_ops": 0})
        c["layers"] += 1
        c["neurons"] += r["neurons"]
        c["_silent"] += r["silent_ratio"] * r["neurons"]
        c["_sparse"] += r["spike_sparsity"] * r["neurons"]
        c["effectual_ops"] += r["effectual_ops"]
        c["loas_cycles"] = None if c["loas_cycles"] is None or r["loas_cycles"] is None \
            else c["loas_cycles"] + r["loas_cycles"]
    for c in cells.values():
        c["silent_ratio"] = c.pop("_silent") / c["neurons"]
        c["spike_sparsity"] = c.pop("_sparse") / c["neurons"]
    report = {"workload": str(out_dir), "name": name, "T": T, "samples": int(images.shape[0]),
              "cnt_mat": str(model.matrix), "layers": rows, "cells": list(cells.values())}
    if labels is not None:
        report["accuracy_on_samples"] = float((logits.argmax(1).cpu() == labels.cpu()).float().mean())
    report["seconds"] = time.time() - t0
    prov = {"model": "snasnet", "cnt_mat": str(model.matrix), "config": model.config,
            "lif": {"tau": 4.0 / 3.0, "v_th": 1.0, "reset": "hard", "decay_shift": 2},
            "spikes": "float model, eval mode",
            "expected_out_words": "golden P-LIF of each layer's own current (SNASNet sums currents into "
                                  "nodes before the next LIF, so outputs do not chain)",
            "samples": report["samples"], **(provenance or {})}
    write_manifest(out_dir, name=name, T=T, layers=entries, provenance=prov)
    return report
