"""Export a trained network's spike layers as a trace workload (traces/README.md, sim/trace.py).

For every spike layer but the encoding one (LoAS does not run it) the export writes the input spikes
of N samples, the int8 weights, the integer bias (BN and the LIF's 0.75 input gain folded in), the
integer threshold, the geometry and the expected output words. The spikes are those of the torch
*integer* model run end to end, so a workload is a consistent chain: the expected output of layer L,
pooled, is the input of layer L+1. Every expected output is checked against the golden model
(sim/golden.py) before it is written; a mismatch is a bug and raises.

The float model's agreement with the integer model is measured, not assumed: per layer, the fraction
of output spike bits that are equal (a) when the integer layer sees the float model's input
("layerwise", the quantisation error of that layer alone) and (b) along the two end-to-end chains.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from sim.errors import UserError

from .layers import SpikeConv, _SpikeLayer, apply_n_mask, integer_lif, spike_layers


def pack_words(spikes: torch.Tensor) -> np.ndarray:
    """0/1 spikes ``[T, ...]`` -> uint16 words ``[...]`` with bit t = timestep t."""
    T = spikes.shape[0]
    s = spikes.detach().to(torch.int64)
    shifts = torch.arange(T, dtype=torch.int64).reshape(T, *([1] * (s.dim() - 1)))
    return (s << shifts).sum(0).numpy().astype(np.uint16)


def unpack_words(words: np.ndarray, T: int) -> torch.Tensor:
    """uint16 words ``[...]`` -> float32 0/1 spikes ``[T, ...]`` (inverse of :func:`pack_words`)."""
    w = torch.from_numpy(np.asarray(words).astype(np.int64))
    return torch.stack([((w >> t) & 1).float() for t in range(T)])


def integer_layer_forward(layer: _SpikeLayer, x: torch.Tensor) -> torch.Tensor:
    """The integer model of ``layer`` (quantised from its current weights) on spikes ``x``."""
    if layer.quant is None:
        layer.quantize()
    return apply_n_mask(integer_lif(layer._int_current(x), layer.quant.threshold), layer.n_mask)


def _capture(model: nn.Module, layers, x: torch.Tensor):
    """Run ``model`` on ``x`` and return logits and {name: (input, output)} of the given layers."""
    seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, n=n: seen.__setitem__(n, (inp[0], out)))
             for n, m in layers]
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        for h in hooks:
            h.remove()
    return logits, seen


def _geometry(layer: _SpikeLayer, x: torch.Tensor):
    from sim.trace import Geometry

    if isinstance(layer, SpikeConv):
        op = layer.op
        if op.kernel_size[0] != op.kernel_size[1] or op.stride[0] != op.stride[1] or \
                op.padding[0] != op.padding[1]:
            raise UserError(f"layer {op}: the trace format needs square kernels, strides and padding")
        return Geometry(c_in=op.in_channels, h=x.shape[-2], w=x.shape[-1], kernel=op.kernel_size[0],
                        stride=op.stride[0], padding=op.padding[0], c_out=op.out_channels), "conv"
    return Geometry.fc(layer.op.in_features, layer.op.out_features), "fc"


def layer_name(module_name: str) -> str:
    """``stages.conv3`` -> ``conv3``; other dotted names keep their dots as underscores."""
    return module_name.removeprefix("stages.").replace(".", "_")


def export_workload(model, images: torch.Tensor, labels: torch.Tensor | None, out_dir, *,
                    name: str, provenance: dict | None = None, progress: bool = False) -> dict:
    """Write the workload of ``model`` on ``images`` (normalised ``[S, C, H, W]``) to ``out_dir``.

    Returns a report: per layer geometry, agreement figures and golden check; float and integer
    accuracies on the exported samples (if ``labels`` are given); seconds taken.

    Raises
    ------
    UserError
        If the network is not a plain chain of spike layers (integer mode undefined) or a quantised
        value leaves the trace format's range.
    RuntimeError
        If the golden model disagrees with the torch integer model (a bug, never expected).
    """
    from tqdm import tqdm

    from sim.golden import LIFParams, run_layer
    from sim.trace import Layer, write_layer, write_manifest

    t0 = time.time()
    out_dir = Path(out_dir)
    model.eval()
    layers = [(n, m) for n, m in spike_layers(model) if not m.encoding]
    if not layers:
        raise UserError("the network has no spike layer to export")
    T = model.T
    try:
        model.set_integer(False)
    except NotImplementedError as exc:
        raise UserError(f"export: {exc}") from None
    logits_f, float_io = _capture(model, layers, images)
    layerwise = {}
    for n, m in layers:
        m.quantize()
        x_in, y_f = float_io[n]
        y_i = integer_layer_forward(m, x_in)
        layerwise[n] = float((y_i == y_f).float().mean())
    model.set_integer(True)
    try:
        logits_i, int_io = _capture(model, layers, images)
    finally:
        model.set_integer(False)
    report_layers, entries = [], []
    it = tqdm(layers, desc="export", disable=not progress, leave=False)
    for n, m in it:
        lname = layer_name(n)
        x_in, y_int = int_io[n]
        q = m.quant
        geom, kind = _geometry(m, x_in)
        if kind == "conv":
            words_in = pack_words(x_in)  # (S, C, H, W)
            out = pack_words(y_int)  # (S, C_out, Ho, Wo)
            expected_torch = out.transpose(0, 2, 3, 1).reshape(out.shape[0], -1, geom.N)
            weight = q.weight.numpy()
        else:
            words_in = pack_words(x_in)[:, :, None, None]
            expected_torch = pack_words(y_int)[:, None, :]
            weight = q.weight.numpy()[:, :, None, None]
        bias = q.bias.numpy()
        if np.abs(bias).max(initial=0) >= 2**31:
            raise UserError(f"layer {lname}: integer bias {int(np.abs(bias).max())} leaves the int32 range")
        lif = LIFParams(q.threshold, 2)
        path = out_dir / f"{lname}.npz"
        # Golden check on what is actually on disk: write, read back, recompute every sample.
        write_layer(path, T=T, geometry=geom, spike_words=words_in, weight=weight, bias=bias, lif=lif,
                    n_mask=m.n_mask, expected_out_words=expected_torch)
        layer = Layer(path, T=T)
        for s in range(layer.samples):
            res = run_layer(layer.words(s), layer.weights_kn(), layer.bias, lif, T, n_mask=m.n_mask,
                            context=str(path))
            if not np.array_equal(res.out_words, layer.expected(s)):
                bad = int((res.out_words != layer.expected(s)).sum())
                raise RuntimeError(f"{path}: sample {s}: torch integer model and golden model "
                                   f"disagree on {bad} output words")
        entries.append((lname, kind))
        e2e = float((float_io[n][1] == y_int).float().mean())
        report_layers.append({
            "name": lname, "kind": kind, "M": geom.M, "K": geom.K, "N": geom.N,
            "threshold": q.threshold, "scale": q.scale,
            "weight_sparsity": float((weight == 0).mean()),
            "input_spike_sparsity": 1.0 - float(x_in.mean()),
            "agreement_layerwise": layerwise[n], "agreement_end_to_end": e2e, "golden": "equal"})
    report = {"workload": str(out_dir), "name": name, "T": T, "samples": int(images.shape[0]),
              "layers": report_layers}
    if labels is not None:
        report["float_acc"] = float((logits_f.argmax(1) == labels).float().mean())
        report["integer_acc"] = float((logits_i.argmax(1) == labels).float().mean())
        report["prediction_agreement"] = float((logits_f.argmax(1) == logits_i.argmax(1)).float().mean())
    report["seconds"] = time.time() - t0
    prov = dict(provenance or {})
    prov.setdefault("lif", {"tau": 4.0 / 3.0, "v_th": 1.0, "reset": "hard", "decay_shift": 2})
    prov["samples"] = report["samples"]
    prov["export_seconds"] = round(report["seconds"], 2)
    prov["agreement"] = {r["name"]: {"layerwise": round(r["agreement_layerwise"], 6),
                                     "end_to_end": round(r["agreement_end_to_end"], 6)}
                         for r in report_layers}
    for k in ("float_acc", "integer_acc"):
        if k in report:
            prov[f"{k}_on_samples"] = round(report[k], 6)
    write_manifest(out_dir, name=name, T=T, layers=entries, provenance=prov)
    return report


@torch.no_grad()
def float_vs_integer(model, batches_iter) -> dict:
    """Accuracy of the float and the integer model, and how often their predictions agree.

    Also the fraction of equal output spike bits per spike layer along the two chains.
    """
    layers = [(n, m) for n, m in spike_layers(model) if not m.encoding]
    model.eval()
    n_seen = correct_f = correct_i = same = 0
    equal = {layer_name(n): 0.0 for n, _ in layers}
    bits = {layer_name(n): 0 for n, _ in layers}
    for x, y in batches_iter:
        model.set_integer(False)
        lf, io_f = _capture(model, layers, x)
        model.set_integer(True)
        try:
            li, io_i = _capture(model, layers, x)
        finally:
            model.set_integer(False)
        pf, pi = lf.argmax(1), li.argmax(1)
        correct_f += int((pf == y).sum())
        correct_i += int((pi == y).sum())
        same += int((pf == pi).sum())
        n_seen += len(y)
        for n, _ in layers:
            a, b = io_f[n][1], io_i[n][1]
            equal[layer_name(n)] += float((a == b).sum())
            bits[layer_name(n)] += a.numel()
    return {"samples": n_seen, "float_acc": correct_f / max(1, n_seen),
            "integer_acc": correct_i / max(1, n_seen), "prediction_agreement": same / max(1, n_seen),
            "spike_agreement": {k: equal[k] / max(1, bits[k]) for k in equal}}


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
