"""Import LoAS's published spike data (the Prosperity repository's pickle format) as a workload.

The file (../shared/data/prosperity-loas/README.md) is a pickle of ``defaultdict(list)`` with keys
``'Conv2d'`` and ``'Linear'``: lists of spike tensors in forward order, ``Conv2d[i]`` (i >= 1)
being the ``[T, C_in, H, W]`` input spikes of the i-th conv after the encoding one. Which conv that
is, and its kernel, stride, padding and output channels, come from LoAS's layer table of the
network (:func:`loas_table`, derived from the zoo's LoAS variant: VGG16, AlexNet with conv3-5 at
8x8, ResNet19 with its three 1x1 stride-2 shortcut convs as layers of their own, each after its
block's second conv as LoAS lists them); every entry is checked against it.

Weights are not included. Each conv gets either Kaiming-initialised weights magnitude-pruned to the
requested sparsity (one global figure or one per layer) and quantised to int8 like a trained layer
(threshold = round(v_th / scale), bias 0), or the int8 weights, biases and thresholds of a
checkpoint of the same architecture. Expected outputs come from the golden model on each layer
alone (a ResNet shortcut's residual current is not part of the imported layers).

A pickle runs whatever it names when loaded, so the file is read with :class:`RestrictedUnpickler`:
only the few globals this format needs are resolved, and the storage loader is replaced by a
``torch.load(weights_only=True)`` of the embedded bytes. Anything else is refused before it runs.
"""

from __future__ import annotations

import collections
import hashlib
import inspect
import io
import pickle
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import yaml

from sim.errors import UserError
from sim.fibers import MAX_T
from sim.trace import Geometry

from .export import pack_words


#: Largest spike file read (the published VGG16 file has 0.7 MB).
MAX_PICKLE_BYTES = 1 << 30


class ProsperityFormatError(UserError):
    """The file is not in the Prosperity spike-data format (or tries to run code)."""


def _load_storage(data: bytes):
    if not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError(f"storage payload must be bytes, got {type(data).__name__}")
    # torch's own restricted unpickler: storages and tensors only, never arbitrary globals. Its
    # warnings about odd pickle protocols of a damaged payload are not the user's news: the load
    # fails or the checks below refuse the result.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
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
        # Unpickle from memory: an opcode declaring a huge length then reads only the bytes that
        # exist (a truncation error) instead of allocating what it declares.
        size = path.stat().st_size
        if size > MAX_PICKLE_BYTES:
            raise ProsperityFormatError(f"{path}: field 'file': {size} bytes, more than {MAX_PICKLE_BYTES}")
        obj = RestrictedUnpickler(io.BytesIO(path.read_bytes())).load()
    except ProsperityFormatError:
        raise
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
    for key, dims in (("Conv2d", ("T", "C_in", "H", "W")), ("Linear", ("T", "F"))):
        for i, t in enumerate(out[key]):
            if key == "Conv2d" and i == 0:
                continue  # the encoding layer's analog input
            field = f"{key}[{i}]"
            if t.dim() != len(dims) or t.is_complex():
                raise ProsperityFormatError(f"{path}: field '{field}': expected spikes [{', '.join(dims)}], "
                                            f"got {t.dtype} {list(t.shape)}")
            for d, n in zip(dims, t.shape):
                if n < 1:
                    raise ProsperityFormatError(f"{path}: field '{field}': {d} = {n}, must be >= 1")
            if not 1 <= t.shape[0] <= MAX_T:
                raise ProsperityFormatError(f"{path}: field '{field}': T = {t.shape[0]}, must be in 1..{MAX_T}")
            if T is None:
                T = t.shape[0]
            elif t.shape[0] != T:
                raise ProsperityFormatError(f"{path}: field '{field}': T = {t.shape[0]}, Conv2d[1] has {T}")
            if t.dtype != torch.bool:
                bad = ~((t == 0) | (t == 1))
                if bool(bad.any()):
                    v = t[bad].flatten()[0].item()
                    raise ProsperityFormatError(f"{path}: field '{field}': spike value {v!r}, must be 0 or 1")
                out[key][i] = t != 0
    return out


# LoAS's layer tables ---------------------------------------------------------------------------
ARCHS = ("vgg16", "alexnet", "resnet19")


@dataclass(frozen=True)
class TableLayer:
    """One GEMM layer LoAS simulates: trace layer name, module path of its conv in the zoo network,
    and its geometry (input C_in x H x W, kernel, stride, padding, C_out)."""

    name: str
    module: str
    geometry: Geometry


def _loas_model(arch: str):
    """The zoo's LoAS variant of ``arch`` (the one place that knows how the zoo spells it)."""
    from . import zoo

    params = inspect.signature(zoo.ZOO[arch][0]).parameters
    if "variant" in params:
        return zoo.build(arch, variant="loas")
    return zoo.build(arch, **({"loas_bug": True} if "loas_bug" in params else {}))


@lru_cache(maxsize=None)
def loas_table(arch: str) -> tuple[TableLayer, ...]:
    """Every conv LoAS simulates in ``arch`` (all but the encoding conv, shortcuts included), in
    LoAS's order (module order: a block's conv1, conv2, then its shortcut), from one T = 1 forward
    pass of the zoo's LoAS variant with hooks on every ``nn.Conv2d``."""
    model = _loas_model(arch)
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    seen: dict[str, tuple] = {}

    def hook(mod, inp, n):
        seen.setdefault(n, tuple(inp[0].shape[-3:]))  # returns None: the input is left as it is

    hooks = [m.register_forward_pre_hook(lambda mod, inp, n=n: hook(mod, inp, n)) for n, m in convs]
    try:
        model.T = 1
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *_input_shape(arch)))
    finally:
        for h in hooks:
            h.remove()
    out = []
    for n, m in convs[1:]:
        c, h, w = seen[n]
        g = Geometry(c_in=c, h=h, w=w, kernel=m.kernel_size[0], stride=m.stride[0], padding=m.padding[0],
                     c_out=m.out_channels)
        out.append(TableLayer(_table_name(n), n, g))
    return tuple(out)


def _input_shape(arch):
    from .zoo import ZOO

    return ZOO[arch][1]


def _table_name(module: str) -> str:
    """``stages.conv3.op`` -> ``conv3``; ``blocks.0.conv1.op`` -> ``blocks_0_conv1``;
    ``blocks.3.shortcut.0`` -> ``blocks_3_shortcut`` (the names export gives spike layers)."""
    from .export import layer_name

    base = module.removesuffix(".op")
    if base.endswith(".shortcut.0"):
        base = base.removesuffix(".0")
    return layer_name(base)


def classifier_features(arch: str) -> int:
    """Input features of the first ``nn.Linear`` of the LoAS variant (what ``Linear[0]`` holds)."""
    return next(m.in_features for m in _loas_model(arch).modules() if isinstance(m, nn.Linear))


def match_table(path, data: dict, arch: str) -> tuple[TableLayer, ...]:
    """Check every entry of ``data`` (from :func:`read_prosperity`) against LoAS's ``arch`` table.

    Raises
    ------
    ProsperityFormatError
        Naming the first entry whose shape differs (or the entry count).
    """
    table = loas_table(arch)
    convs = data["Conv2d"]
    if len(convs) != len(table) + 1:
        raise ProsperityFormatError(f"{path}: field 'Conv2d': {len(convs)} entries, LoAS {arch} has "
                                    f"{len(table) + 1} convs (the encoding conv and {len(table)} layers)")
    T = int(convs[1].shape[0])
    for i, (t, tl) in enumerate(zip(convs[1:], table), start=1):
        g = tl.geometry
        want = [T, g.c_in, g.h, g.w]
        if list(t.shape) != want:
            raise ProsperityFormatError(f"{path}: field 'Conv2d[{i}]': shape {list(t.shape)}, but LoAS {arch} "
                                        f"layer {tl.name} reads {want}")
    if data["Linear"]:
        f = classifier_features(arch)
        if data["Linear"][0].shape[1] != f:
            raise ProsperityFormatError(f"{path}: field 'Linear[0]': {data['Linear'][0].shape[1]} features, "
                                        f"LoAS {arch}'s classifier reads {f}")
    return table


def detect_arch(path, data: dict) -> str:
    """The one architecture whose table every entry matches (``--arch auto``)."""
    errors = []
    for arch in ARCHS:
        try:
            match_table(path, data, arch)
            return arch
        except ProsperityFormatError as exc:
            errors.append(f"{arch}: {str(exc).split(': ', 1)[1]}")
    raise ProsperityFormatError(f"{path}: field 'Conv2d': matches no LoAS network ({'; '.join(errors)})")


# Weights ----------------------------------------------------------------------------------------
def load_sparsity(spec, names) -> float | dict:
    """``--weight-sparsity``: a number in [0, 1) or a YAML file mapping every layer name to one.

    Raises
    ------
    UserError
        Naming the file, the key and the value.
    """
    try:
        v = float(spec)
    except (TypeError, ValueError):
        v = None
    if v is not None:
        if not 0.0 <= v < 1.0:
            raise UserError(f"--weight-sparsity: must be in [0, 1), got {spec!r}")
        return v
    p = Path(spec)
    if not p.is_file():
        raise UserError(f"--weight-sparsity: {spec!r} is neither a number nor a YAML file")
    try:
        d = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"{p}: key '<yaml>': not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(d, dict):
        raise UserError(f"{p}: key '<root>': must map layer names to sparsities")
    for k, x in d.items():
        if k not in names:
            raise UserError(f"{p}: key '{k}': no such layer (layers: {', '.join(names)})")
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0.0 <= x < 1.0:
            raise UserError(f"{p}: key '{k}': sparsity must be a number in [0, 1), got {x!r}")
    missing = [n for n in names if n not in d]
    if missing:
        raise UserError(f"{p}: key '{missing[0]}': missing (every layer needs a sparsity)")
    return {k: float(d[k]) for k in names}


def _synthetic_weights(table, sparsity, seed):
    """Kaiming-normal float weights pruned by magnitude: globally to one figure, or per layer."""
    gen = torch.Generator().manual_seed(seed)
    weights = []
    for tl in table:
        g = tl.geometry
        std = (2.0 / g.K) ** 0.5  # Kaiming normal, fan_in
        weights.append(torch.randn((g.c_out, g.c_in, g.kernel, g.kernel), generator=gen, dtype=torch.float64) * std)
    groups = [list(range(len(table)))] if not isinstance(sparsity, dict) else [[i] for i in range(len(table))]
    out = list(weights)
    for grp in groups:
        sp = sparsity if not isinstance(sparsity, dict) else sparsity[table[grp[0]].name]
        flat = torch.cat([weights[i].abs().flatten() for i in grp])
        k = int(round(sp * flat.numel()))
        keep = torch.ones(flat.numel(), dtype=torch.bool)
        keep[torch.sort(flat, stable=True).indices[:k]] = False  # exact count, ties broken by position
        off = 0
        for i in grp:
            n = weights[i].numel()
            out[i] = weights[i] * keep[off:off + n].reshape(weights[i].shape)
            off += n
    res = []
    for w in out:
        wmax = float(w.abs().max())
        scale = wmax / 127.0 if wmax > 0 else 1.0
        wq = torch.round(w / scale).clamp(-127, 127).to(torch.int8).numpy()
        res.append((wq, np.zeros(w.shape[0], np.int64), max(1, int(round(1.0 / scale)))))
    return res


def _checkpoint_weights(table, arch, checkpoint):
    """int8 weight, bias and threshold of every table layer from a checkpoint of ``arch``; a
    shortcut conv takes its block's shared scale and the threshold of the block's second conv."""
    from .checkpoint import load_model

    model, ck = load_model(checkpoint, archs=(arch,), hint=f"the spikes are LoAS {arch}'s")
    mods = dict(model.named_modules())
    res = []
    for tl in table:
        conv = mods.get(tl.module)
        g = tl.geometry
        if not isinstance(conv, nn.Conv2d) or tuple(conv.weight.shape) != (g.c_out, g.c_in, g.kernel, g.kernel):
            got = None if conv is None else tuple(conv.weight.shape)
            raise UserError(f"{checkpoint}: field 'state': layer {tl.name} ({tl.module}) has weight {got}, "
                            f"LoAS {arch} needs {(g.c_out, g.c_in, g.kernel, g.kernel)}")
        if tl.module.endswith(".shortcut.0"):
            block = mods[tl.module.removesuffix(".shortcut.0")]
            q = block.quantize()
            res.append((block.res_weight.numpy(), block.res_bias.numpy().astype(np.int64), q.threshold))
        else:
            q = mods[tl.module.removesuffix(".op")].quantize()
            res.append((q.weight.numpy(), q.bias.numpy().astype(np.int64), q.threshold))
    return res, ck


def import_prosperity(path, out_dir, *, name: str, force: bool = False, **options) -> dict:
    """Write a workload pairing each conv's real input spikes with int8 weights
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


def _import_prosperity(path, out_dir, *, name: str, arch: str = "vgg16", weight_sparsity=0.98, seed: int = 0,
                       checkpoint=None, n_mask: int = 0) -> dict:
    """Write a workload pairing each LoAS layer's real input spikes with int8 weights into
    ``out_dir`` (a fresh directory).

    Parameters
    ----------
    arch : str                 'vgg16', 'alexnet', 'resnet19' or 'auto' (the one whose table matches)
    weight_sparsity            a number in [0, 1) (global magnitude pruning), a {layer: sparsity}
                               mapping (per layer), or a YAML file path holding one (:func:`load_sparsity`)
    checkpoint : path or None  take the weights from this checkpoint of ``arch`` instead

    Raises
    ------
    ProsperityFormatError
        On a malformed file or an entry that does not match the table. ``UserError`` on a bad
        sparsity, architecture or checkpoint.
    """
    from sim.golden import LIFParams, run_layer
    from sim.trace import im2col, write_layer, write_manifest

    if arch != "auto" and arch not in ARCHS:
        raise UserError(f"--arch: must be one of {', '.join(ARCHS)} or auto, got {arch!r}")
    data = read_prosperity(path)
    arch = detect_arch(path, data) if arch == "auto" else arch
    table = match_table(path, data, arch)
    names = [tl.name for tl in table]
    convs = data["Conv2d"][1:]
    T = int(convs[0].shape[0])
    if checkpoint is not None:
        params, ck = _checkpoint_weights(table, arch, checkpoint)
        from .export import file_sha256

        wsource = {"weights": "checkpoint", "checkpoint": str(checkpoint),
                   "checkpoint_sha256": file_sha256(checkpoint)}
    else:
        sp = weight_sparsity if isinstance(weight_sparsity, dict) else load_sparsity(weight_sparsity, names)
        params = _synthetic_weights(table, sp, seed)
        wsource = {"weights": "synthetic: Kaiming normal (fan_in), "
                              f"{'per-layer' if isinstance(sp, dict) else 'global'} magnitude pruning, int8 per layer",
                   "weight_sparsity": sp, "seed": seed}
    out_dir = Path(out_dir)
    entries, layers = [], []
    for tl, (wq, bias, thr), t in zip(table, params, convs):
        g = tl.geometry
        lif = LIFParams(int(thr), 2)
        words = pack_words(t.float().unsqueeze(1))  # (1, C, H, W)
        p = out_dir / f"{tl.name}.npz"
        # expected outputs come from the golden model itself (the layer alone)
        res = run_layer(im2col(words[0], g), np.ascontiguousarray(wq.reshape(g.N, g.K).T), bias, lif, T,
                        n_mask=n_mask, context=str(p))
        write_layer(p, T=T, geometry=g, spike_words=words, weight=wq, bias=bias, lif=lif, n_mask=n_mask,
                    expected_out_words=res.out_words[None])
        entries.append((tl.name, "conv"))
        layers.append({"name": tl.name, "M": g.M, "K": g.K, "N": g.N, "kernel": g.kernel, "stride": g.stride,
                       "weight_sparsity": float((wq == 0).mean()),
                       "spike_sparsity": 1.0 - float(t.float().mean())})
    sha = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    write_manifest(out_dir, name=name, T=T, layers=entries, provenance={
        "source": f"prosperity-loas pickle (LoAS {arch} input spikes)", "arch": arch,
        "source_file": Path(path).name, "source_sha256": sha, **wsource,
        "lif": {"tau": 4.0 / 3.0, "v_th": 1.0, "reset": "hard", "decay_shift": 2}})
    return {"workload": str(out_dir), "arch": arch, "T": T, "layers": layers}
