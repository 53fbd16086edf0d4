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

Residual networks (ResNet19): the second spike layer of a block also receives the shortcut current
(:class:`~models.layers.ResidualBlock`); its file holds that integer current as the optional
``residual`` member (int32 [S, T, M, N], sim/trace.py) and the golden check adds it. The shortcut
conv itself is not a layer of the workload: its output is a current, not spikes, and a trace layer
is a spike GEMM followed by a P-LIF. A fully connected layer that averages a spike map
(:class:`~models.layers.SpikeLinear` with ``pool``) is written as a conv whose kernel covers the whole
map (the 1/pool folded into the int8 weights), which is exactly its integer arithmetic on spikes.
"""

from __future__ import annotations

import hashlib
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from sim.errors import UserError

from .layers import ResidualBlock, SpikeConv, _SpikeLayer, apply_n_mask, integer_lif, spike_layers


def pack_words(spikes: torch.Tensor) -> np.ndarray:
    """0/1 spikes ``[T, ...]`` -> uint16 words ``[...]`` with bit t = timestep t."""
    T = spikes.shape[0]
    s = spikes.detach().to(torch.int32)  # T <= 16 bits: int32 holds every word
    shifts = torch.arange(T, dtype=torch.int32).reshape(T, *([1] * (s.dim() - 1)))
    return (s << shifts).sum(0, dtype=torch.int32).numpy().astype(np.uint16)


def unpack_words(words: np.ndarray, T: int) -> torch.Tensor:
    """uint16 words ``[...]`` -> float32 0/1 spikes ``[T, ...]`` (inverse of :func:`pack_words`)."""
    w = torch.from_numpy(np.asarray(words).astype(np.int64))
    return torch.stack([((w >> t) & 1).float() for t in range(T)])


def integer_layer_forward(layer: _SpikeLayer, x: torch.Tensor,
                          residual: torch.Tensor | None = None) -> torch.Tensor:
    """The integer model of ``layer`` (quantised from its current weights unless it already is) on
    spikes ``x``, with an optional int64 residual current in the layer's integer units."""
    if layer.quant is None:
        layer.quantize()
    O = layer._int_current(x)
    if residual is not None:
        O = O + residual
    return apply_n_mask(integer_lif(O, layer.quant.threshold), layer.n_mask)


def residual_blocks(model: nn.Module) -> dict[int, ResidualBlock]:
    """{id(target spike layer): block} of every residual block of ``model``."""
    return {id(b.target): b for b in model.modules() if isinstance(b, ResidualBlock)}


def _capture(model: nn.Module, layers, x: torch.Tensor, blocks: dict[int, ResidualBlock] | None = None):
    """Run ``model`` on ``x``; return logits, {name: (input, output, residual or None)} of the given
    layers and {name: block input} for the layers that are targets of ``blocks``."""
    seen: dict[str, tuple] = {}
    block_in: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(
        lambda mod, args, kwargs, out, n=n: seen.__setitem__(n, (args[0], out, kwargs.get("residual"))),
        with_kwargs=True) for n, m in layers]
    for n, m in layers:
        if blocks and id(m) in blocks:
            hooks.append(blocks[id(m)].register_forward_pre_hook(
                lambda mod, args, n=n: block_in.__setitem__(n, args[0])))
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        for h in hooks:
            h.remove()
    return logits, seen, block_in


def _geometry(layer: _SpikeLayer, x: torch.Tensor):
    from sim.trace import Geometry

    if isinstance(layer, SpikeConv):
        op = layer.op
        if op.kernel_size[0] != op.kernel_size[1] or op.stride[0] != op.stride[1] or \
                op.padding[0] != op.padding[1]:
            raise UserError(f"layer {op}: the trace format needs square kernels, strides and padding")
        return Geometry(c_in=op.in_channels, h=x.shape[-2], w=x.shape[-1], kernel=op.kernel_size[0],
                        stride=op.stride[0], padding=op.padding[0], c_out=op.out_channels), "conv"
    if x.dim() == 5:  # an fc averaging a spike map: a conv whose kernel is the whole (square) map
        if x.shape[-2] != x.shape[-1]:
            raise UserError(f"layer {layer.op}: the trace format needs a square map, got {tuple(x.shape[-2:])}")
        return Geometry(c_in=layer.op.in_features, h=x.shape[-2], w=x.shape[-1], kernel=x.shape[-1],
                        stride=1, padding=0, c_out=layer.op.out_features), "fc"
    return Geometry.fc(layer.op.in_features, layer.op.out_features), "fc"


def golden_check(layer) -> None:
    """Run every sample of a trace :class:`~sim.trace.Layer` through the golden model and compare
    with its expected outputs.

    The samples' GEMM rows are stacked along M and run as one golden layer: every row is its own
    output neurons (GEMM row, P-LIF and n_mask act per (m, n)), so this is exactly the per-sample
    runs, in one pass.

    Raises
    ------
    RuntimeError
        Naming the file, the first disagreeing sample and how many words disagree.
    """
    from sim.golden import run_layer
    from sim.trace import im2col

    g, S, T = layer.geometry, layer.samples, layer.T
    words = im2col(layer.spike_words, g).reshape(S * g.M, g.K)
    residual = None
    if layer.residual is not None:  # (S, T, M, N) -> (T, S*M, N), rows in the order of ``words``
        residual = layer.residual.transpose(1, 0, 2, 3).reshape(T, S * g.M, g.N)
    res = run_layer(words, layer.weights_kn(), layer.bias, layer.lif, T, n_mask=layer.n_mask,
                    context=str(layer.path), residual=residual)
    bad = (res.out_words.reshape(S, g.M, g.N) != layer.expected_out_words).sum(axis=(1, 2))
    if bad.any():
        s = int(np.flatnonzero(bad)[0])
        raise RuntimeError(f"{layer.path}: sample {s}: torch integer model and golden model "
                           f"disagree on {int(bad[s])} output words")


def layer_name(module_name: str) -> str:
    """``stages.conv3`` -> ``conv3``; other dotted names keep their dots as underscores."""
    return module_name.removeprefix("stages.").replace(".", "_")


@contextmanager
def torch_threads(n: int | None):
    """Run the block with ``n`` torch intra-op threads (None: leave the setting), then restore it."""
    if n is None:
        yield
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise UserError(f"--threads: must be a positive int, got {n!r}")
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def export_workload(model, images: torch.Tensor, labels: torch.Tensor | None, out_dir, *,
                    name: str, provenance: dict | None = None, progress: bool = False,
                    threads: int | None = 1, force: bool = False) -> dict:
    """Write the workload of ``model`` on ``images`` (normalised ``[S, C, H, W]``) to ``out_dir``.

    Returns a report: per layer geometry, agreement figures and golden check; float and integer
    accuracies on the exported samples (if ``labels`` are given); seconds taken.

    ``threads``: torch threads while exporting (None: the current setting). One by default: an
    export is a few thousand small tensor operations, and on shared cores every one of them waits
    for a busy core to reach a barrier of the thread pool. VGG16 (1 sample, bench/export.py) on 2
    cores shared with another job: 5-6 s with 2 threads, 0.5-1.5 s with 1 (on idle cores 2
    threads gained at most 0.1 s).

    The workload is written whole (:func:`sim.atomic.replace_dir`): built beside ``out_dir`` and
    swapped in with one rename, one writer at a time. An existing ``out_dir`` is replaced only with
    ``force`` (and only if it holds nothing but a workload's files).

    Raises
    ------
    UserError
        If the network has no integer mode, a checkpoint tensor is not finite, a quantised value
        leaves the trace format's range, ``threads`` is not a positive int, or ``out_dir`` cannot
        be written or exists (without ``force``).
    RuntimeError
        If the golden model disagrees with the torch integer model (a bug, never expected).
    """
    from sim.atomic import check_target
    from sim.trace import WORKLOAD_TARGET

    with torch_threads(threads):
        check_target(out_dir, force=force, **WORKLOAD_TARGET)
        check_finite_state(model)
        return _export(model, images, labels, out_dir, name=name, provenance=provenance,
                       progress=progress, force=force)


def check_finite_state(model: nn.Module, source: str = "checkpoint") -> None:
    """Refuse a model whose parameters or buffers hold NaN or inf (a diverged training run): its
    integer export would be garbage. Raises UserError naming the tensor."""
    for key, t in model.state_dict().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = t[~torch.isfinite(t)].flatten()[0].item()
            raise UserError(f"{source}: tensor '{key}' holds non-finite values ({bad}); "
                            f"the network cannot be exported")


def _export(model, images, labels, out_dir, *, name, provenance, progress, force) -> dict:
    from tqdm import tqdm

    from sim.atomic import replace_dir
    from sim.golden import BIAS_BITS, LIFParams, int_range_problem
    from sim.trace import WORKLOAD_TARGET, write_and_load_layer, write_manifest

    t0 = time.time()
    out_dir = Path(out_dir)
    model.eval()
    layers = [(n, m) for n, m in spike_layers(model) if not m.encoding]
    if not layers:
        raise UserError("the network has no spike layer to export")
    T = model.T
    blocks = residual_blocks(model)
    try:
        model.set_integer(False)
    except NotImplementedError as exc:
        raise UserError(f"export: {exc}") from None
    logits_f, float_io, float_block_in = _capture(model, layers, images, blocks)
    model.set_integer(True)  # quantises every layer once (a block's target with its shortcut)
    try:
        layerwise = {}
        for n, m in layers:
            x_in, y_f, _ = float_io[n]
            r = blocks[id(m)].integer_residual(float_block_in[n]) if id(m) in blocks else None
            y_i = integer_layer_forward(m, x_in, r)
            layerwise[n] = float((y_i == y_f).float().mean())
        logits_i, int_io, int_block_in = _capture(model, layers, images, blocks)
    finally:
        model.set_integer(False)
    with replace_dir(out_dir, force=force, **WORKLOAD_TARGET) as stage:
        report_layers, entries = [], []
        it = tqdm(layers, desc="export", disable=not progress, leave=False)
        for n, m in it:
            lname = layer_name(n)
            x_in, y_int, res_int = int_io[n]
            q = m.quant
            geom, kind = _geometry(m, x_in)
            words_in = pack_words(x_in)  # (S, C, H, W), or (S, F) for a plain fc
            if words_in.ndim == 2:
                words_in = words_in[:, :, None, None]
            out = pack_words(y_int)  # (S, C_out, Ho, Wo), or (S, N) for an fc
            if out.ndim == 4:
                expected_torch = out.transpose(0, 2, 3, 1).reshape(out.shape[0], -1, geom.N)
            else:
                expected_torch = out[:, None, :]
            weight = q.weight.numpy()
            if weight.ndim == 2:  # fc: a 1x1 conv, or a kernel covering the whole averaged map
                weight = np.ascontiguousarray(np.broadcast_to(
                    weight[:, :, None, None], (geom.c_out, geom.c_in, geom.kernel, geom.kernel)))
            residual = None
            if res_int is not None:  # [T, S, C, Ho, Wo] -> (S, T, M, N), M row-major over (Ho, Wo)
                r = res_int.expand(T, *y_int.shape[1:]).permute(1, 0, 3, 4, 2)
                residual = r.reshape(r.shape[0], T, geom.M, geom.N).numpy()
            bias = q.bias.numpy()
            problem = int_range_problem(bias, BIAS_BITS)
            if problem:
                raise UserError(f"layer {lname}: integer bias {problem}")
            lif = LIFParams(q.threshold, 2)
            path = stage / f"{lname}.npz"
            # Golden check on what is actually on disk: write, read back, recompute every sample.
            layer = write_and_load_layer(path, T=T, geometry=geom, spike_words=words_in, weight=weight,
                                         bias=bias, lif=lif, n_mask=m.n_mask,
                                         expected_out_words=expected_torch, residual=residual)
            golden_check(layer)
            entries.append((lname, kind))
            e2e = float((float_io[n][1] == y_int).float().mean())
            shortcut = None
            if id(m) in blocks:
                shortcut = "identity" if getattr(blocks[id(m)], "shortcut", None) is None else "conv"
            report_layers.append({
                "name": lname, "kind": kind, "M": geom.M, "K": geom.K, "N": geom.N, "residual": shortcut,
                "threshold": q.threshold, "scale": q.scale,
                "weight_sparsity": float((weight == 0).mean()),
                "input_spike_sparsity": 1.0 - float(x_in.mean()),
                "agreement_layerwise": layerwise[n], "agreement_end_to_end": e2e, "golden": "equal"})
            blk = blocks.get(id(m))
            if blk is not None and getattr(blk, "shortcut", None) is not None and \
                    getattr(model, "variant", None) == "loas":
                report_layers.append(_export_shortcut(blk, lname, int_block_in[n], q, m.n_mask, T, stage))
                entries.append((report_layers[-1]["name"], "conv"))
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
                             for r in report_layers if r["agreement_layerwise"] is not None}
        for k in ("float_acc", "integer_acc"):
            if k in report:
                prov[f"{k}_on_samples"] = round(report[k], 6)
        write_manifest(stage, name=name, T=T, layers=entries, provenance=prov)
    return report


def _export_shortcut(blk, conv2_name: str, x: torch.Tensor, q, n_mask: int, T: int, out_dir: Path) -> dict:
    """Write a residual block's 1x1 shortcut conv as a GEMM layer of its own (LoAS simulates it as a
    layer): its input spikes (the block input ``x`` of the integer chain), its int8 weights and
    integer bias in conv2's units (:meth:`~models.zoo.BasicBlock.quantize`), and as expected outputs
    what a P-LIF with conv2's threshold makes of that current. In the network the current is added
    to conv2's (conv2's ``residual``), so nothing consumes these outputs; they keep the layer a
    golden-checked trace layer like every other."""
    from sim.golden import LIFParams
    from sim.trace import Geometry, write_and_load_layer

    conv = blk.shortcut[0]
    O = blk.integer_residual(x)  # int64 [T, S, C_out, Ho, Wo]
    y = apply_n_mask(integer_lif(O, q.threshold), n_mask)
    geom = Geometry(c_in=conv.in_channels, h=x.shape[-2], w=x.shape[-1], kernel=1,
                    stride=conv.stride[0], padding=0, c_out=conv.out_channels)
    out = pack_words(y)
    expected = out.transpose(0, 2, 3, 1).reshape(out.shape[0], -1, geom.N)
    weight = blk.res_weight.numpy()
    bias = blk.res_bias.numpy()
    lname = conv2_name.removesuffix("_conv2") + "_shortcut"
    layer = write_and_load_layer(out_dir / f"{lname}.npz", T=T, geometry=geom, spike_words=pack_words(x),
                                 weight=weight, bias=bias, lif=LIFParams(q.threshold, 2), n_mask=n_mask,
                                 expected_out_words=expected)
    golden_check(layer)
    return {"name": lname, "kind": "conv", "M": geom.M, "K": geom.K, "N": geom.N, "residual": None,
            "threshold": q.threshold, "scale": q.scale, "weight_sparsity": float((weight == 0).mean()),
            "input_spike_sparsity": 1.0 - float(x.mean()), "agreement_layerwise": None,
            "agreement_end_to_end": None, "golden": "equal"}


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
        lf, io_f, _ = _capture(model, layers, x)
        model.set_integer(True)
        try:
            li, io_i, _ = _capture(model, layers, x)
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
