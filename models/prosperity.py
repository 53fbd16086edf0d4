"""Import LoAS's published spike data (the Prosperity repository's pickle format) as a workload.

The file (../shared/data/prosperity-loas/README.md) is a pickle of ``defaultdict(list)`` with keys
``'Conv2d'`` and ``'Linear'``: lists of ``torch.bool`` tensors, ``Conv2d[i]`` (i >= 1) being the
``[T, C_in, H, W]`` input spikes of conv i+1. Weights are not included: each conv gets
Kaiming-initialised weights of the right shape, globally magnitude-pruned to the requested sparsity
and quantised to int8 like a trained layer (threshold = round(v_th / scale), bias 0).

A pickle runs whatever it names when loaded, so the file is read with :class:`RestrictedUnpickler`:
only the few globals this format needs are resolved, and the storage loader is replaced by a
``torch.load(weights_only=True)`` of the embedded bytes. Anything else is refused before it runs.
"""

from __future__ import annotations

import collections
import hashlib
import io
import pickle
import warnings
from pathlib import Path

import numpy as np
import torch

from sim.errors import UserError

from .export import pack_words


class ProsperityFormatError(UserError):
    """The file is not in the Prosperity spike-data format (or tries to run code)."""


def _load_storage(data: bytes):
    if not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError(f"storage payload must be bytes, got {type(data).__name__}")
    # torch's own restricted unpickler: storages and tensors only, never arbitrary globals.
    return torch.load(io.BytesIO(bytes(data)), weights_only=True)


def _check_view(storage, offset, size, stride) -> None:
    """Refuse a tensor view its storage cannot hold: torch would grow the storage (uninitialised
    memory becoming data) or alias elements. The view must be plain ints, non-negative, with no
    stride 0 or overlap between dimensions of size > 1, and lie wholly inside the storage."""
    def ints(v):
        return isinstance(v, tuple) and all(isinstance(x, int) and not isinstance(x, bool) for x in v)

    if not (isinstance(offset, int) and ints(size) and ints(stride) and len(size) == len(stride)):
        raise pickle.UnpicklingError(f"tensor view offset {offset!r}, size {size!r}, stride {stride!r} "
                                     f"is not a valid view")
    if offset < 0 or min(size, default=0) < 0 or min(stride, default=0) < 0:
        raise pickle.UnpicklingError(f"tensor view with a negative offset, size or stride refused "
                                     f"(offset {offset}, size {size}, stride {stride})")
    if 0 in size:
        return
    span = 1
    for st, sz in sorted((st, sz) for st, sz in zip(stride, size) if sz > 1):
        if st < span:
            raise pickle.UnpicklingError(f"tensor view size {size}, stride {stride}: stride "
                                         f"{st} {'is 0' if st == 0 else 'overlaps another dimension'}; refused")
        span = st * sz
    need = offset + sum((sz - 1) * st for sz, st in zip(size, stride)) + 1
    with warnings.catch_warnings():  # TypedStorage.size() warns that TypedStorage is deprecated
        warnings.simplefilter("ignore", UserWarning)
        have = storage.size()  # elements (bytes for an untyped storage)
    if need > have:
        raise pickle.UnpicklingError(f"tensor view size {size}, stride {stride}, offset {offset} needs "
                                     f"{need} storage elements but the storage holds {have}; refused "
                                     f"(a storage is never grown)")


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, hooks=None, *rest):
    if not isinstance(storage, (torch.UntypedStorage, torch.TypedStorage)):
        raise pickle.UnpicklingError(f"tensor storage of type {type(storage).__name__} refused")
    if hooks:
        raise pickle.UnpicklingError("tensors with backward hooks are refused")
    _check_view(storage, offset, size, stride)  # a stride-0 or grown view is refused before use
    t = torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, collections.OrderedDict())
    if t.dtype == torch.bool and t.numel() and int(t.view(torch.uint8).max()) > 1:
        raise pickle.UnpicklingError(f"bool tensor of size {list(size)} holds byte values other than 0 and 1")
    return t


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals of the Prosperity spike-data format.

    Allowed: ``collections.defaultdict``, ``collections.OrderedDict``, ``builtins.list``, and
    torch's tensor and storage rebuild functions (replaced by checked equivalents). Any other global
    raises :class:`pickle.UnpicklingError` before anything is called.
    """

    ALLOWED = {
        ("collections", "defaultdict"): collections.defaultdict,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "list"): list,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch.storage", "_load_from_bytes"): _load_storage,
    }

    def find_class(self, module, name):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed") from None


def read_prosperity(path) -> dict[str, list[torch.Tensor]]:
    """Read and validate a Prosperity spike file -> ``{"Conv2d": [...], "Linear": [...]}``.

    Raises
    ------
    ProsperityFormatError
        If the file is missing, refers to a disallowed global, or does not have the documented
        structure (the message names the file, the field and the value).
    """
    path = Path(path)
    if not path.is_file():
        raise ProsperityFormatError(f"{path}: file not found")
    try:
        with open(path, "rb") as f:
            obj = RestrictedUnpickler(f).load()
    except Exception as exc:
        why = next((ln.strip() for ln in str(exc).splitlines() if "error" in ln.lower()), str(exc).split("\n")[0])
        raise ProsperityFormatError(f"{path}: field 'pickle': refused or unreadable "
                                    f"({type(exc).__name__}: {why[:300]})") from None
    if not isinstance(obj, dict) or "Conv2d" not in obj:
        keys = sorted(map(repr, obj))[:8] if isinstance(obj, dict) else type(obj).__name__
        raise ProsperityFormatError(f"{path}: field 'Conv2d': missing (found {keys})")
    out = {}
    for key in ("Conv2d", "Linear"):
        seq = obj.get(key, [])
        if not isinstance(seq, list) or not all(isinstance(t, torch.Tensor) for t in seq):
            raise ProsperityFormatError(f"{path}: field '{key}': expected a list of tensors")
        out[key] = seq
    convs = out["Conv2d"]
    if len(convs) < 2:
        raise ProsperityFormatError(f"{path}: field 'Conv2d': {len(convs)} entries, need >= 2")
    T = None
    for i, t in enumerate(convs[1:], start=1):
        if t.dtype != torch.bool or t.dim() != 4:
            raise ProsperityFormatError(
                f"{path}: field 'Conv2d[{i}]': expected bool [T, C, H, W], got {t.dtype} {list(t.shape)}")
        if T is None:
            T = t.shape[0]
        elif t.shape[0] != T:
            raise ProsperityFormatError(f"{path}: field 'Conv2d[{i}]': T = {t.shape[0]}, Conv2d[1] has {T}")
    for i, t in enumerate(out["Linear"]):
        if t.dtype != torch.bool or t.dim() != 2 or t.shape[0] != T:
            raise ProsperityFormatError(
                f"{path}: field 'Linear[{i}]': expected bool [T={T}, F], got {t.dtype} {list(t.shape)}")
    return out


def import_prosperity(path, out_dir, *, name: str, force: bool = False, **options) -> dict:
    """Write a workload pairing each conv's real input spikes with synthetic pruned int8 weights
    (:func:`_import_prosperity` has the ``options``).

    ``name`` must be a plain workload name (:func:`sim.trace.check_workload_name`). The workload is
    written whole (:func:`sim.atomic.replace_dir`): built beside ``out_dir``, swapped in with one
    rename, one writer at a time; an existing ``out_dir`` is replaced only with ``force``.

    Raises
    ------
    UserError
        On a bad name or an output directory that cannot be written or exists (without ``force``),
        checked before the file is read; otherwise as :func:`_import_prosperity`.
    """
    from sim.atomic import check_target, replace_dir
    from sim.trace import WORKLOAD_TARGET, check_workload_name

    check_workload_name(name)
    check_target(out_dir, force=force, **WORKLOAD_TARGET)
    with replace_dir(out_dir, force=force, **WORKLOAD_TARGET) as stage:
        rep = _import_prosperity(path, stage, name=name, **options)
    rep["workload"] = str(out_dir)
    return rep


def _import_prosperity(path, out_dir, *, name: str, weight_sparsity: float, seed: int,
                       kernel: int = 3, padding: int = 1, n_mask: int = 0) -> dict:
    """Write the workload into ``out_dir`` (a fresh directory).

    Conv i+1 (layer name ``conv{i+1}``) reads ``Conv2d[i]``; its output channels are the next
    conv's input channels, or for the last conv the classifier's input features.

    Raises
    ------
    ProsperityFormatError
        On a malformed file. ``UserError`` on a sparsity outside [0, 1).
    """
    from sim.golden import LIFParams, run_layer
    from sim.trace import Geometry, im2col, write_layer, write_manifest

    if not 0.0 <= weight_sparsity < 1.0:
        raise UserError(f"--weight-sparsity: must be in [0, 1), got {weight_sparsity!r}")
    data = read_prosperity(path)
    convs = data["Conv2d"][1:]
    T = int(convs[0].shape[0])
    geoms = []
    for i, t in enumerate(convs):
        if i + 1 < len(convs):
            c_out = int(convs[i + 1].shape[1])
        elif data["Linear"]:
            c_out = int(data["Linear"][0].shape[1])
        else:
            raise ProsperityFormatError(f"{path}: field 'Linear': needed for the last conv's channels")
        geoms.append(Geometry(c_in=int(t.shape[1]), h=int(t.shape[2]), w=int(t.shape[3]),
                              kernel=kernel, stride=1, padding=padding, c_out=c_out))
    gen = torch.Generator().manual_seed(seed)
    weights = []
    for g in geoms:
        std = (2.0 / g.K) ** 0.5  # Kaiming normal, fan_in
        shape = (g.c_out, g.c_in, g.kernel, g.kernel)
        weights.append(torch.randn(shape, generator=gen, dtype=torch.float64) * std)
    # global magnitude pruning over every imported conv, exact count, ties broken by position
    flat = torch.cat([w.abs().flatten() for w in weights])
    k = int(round(weight_sparsity * flat.numel()))
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    keep[torch.sort(flat, stable=True).indices[:k]] = False
    off = 0
    out_dir = Path(out_dir)
    entries, layers = [], []
    for i, (g, w, t) in enumerate(zip(geoms, weights, convs)):
        m = keep[off: off + w.numel()].reshape(w.shape)
        off += w.numel()
        w = w * m
        wmax = float(w.abs().max())
        scale = wmax / 127.0 if wmax > 0 else 1.0
        wq = torch.round(w / scale).clamp(-127, 127).to(torch.int8).numpy()
        lif = LIFParams(max(1, int(round(1.0 / scale))), 2)
        words = pack_words(t.float().unsqueeze(1))  # (1, C, H, W)
        lname = f"conv{i + 2}"
        p = out_dir / f"{lname}.npz"
        bias = np.zeros(g.c_out, dtype=np.int64)
        # expected outputs come from the golden model itself (no trained network to compare with)
        res = run_layer(im2col(words[0], g), np.ascontiguousarray(wq.reshape(g.N, g.K).T), bias, lif, T,
                        n_mask=n_mask, context=str(p))
        write_layer(p, T=T, geometry=g, spike_words=words, weight=wq, bias=bias, lif=lif, n_mask=n_mask,
                    expected_out_words=res.out_words[None])
        entries.append((lname, "conv"))
        layers.append({"name": lname, "M": g.M, "K": g.K, "N": g.N,
                       "weight_sparsity": float((wq == 0).mean()),
                       "spike_sparsity": 1.0 - float(t.float().mean())})
    sha = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    write_manifest(out_dir, name=name, T=T, layers=entries, provenance={
        "source": "prosperity-loas pickle (LoAS VGG16 input spikes, one image)",
        "source_file": Path(path).name, "source_sha256": sha,
        "weights": "synthetic: Kaiming normal (fan_in), global magnitude pruning, int8 per layer",
        "weight_sparsity": weight_sparsity, "seed": seed, "kernel": kernel, "padding": padding,
        "lif": {"tau": 4.0 / 3.0, "v_th": 1.0, "reset": "hard", "decay_shift": 2}})
    return {"workload": str(out_dir), "T": T, "layers": layers}
