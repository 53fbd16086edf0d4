"""Compact model checkpoints: architecture metadata + pruned weights stored as bitmask and non-zeros.

Format (a dict readable with ``torch.load(weights_only=True)``)::

    {"format": "loas-snn/1",
     "meta": {"arch": "default", "kwargs": {...}, "dataset": "fashion-mnist"},
     "record": {...},                       # accuracy, sparsity, recipe: provenance
     "dense": {name: tensor},               # BN parameters and statistics, biases
     "sparse": {name: {"shape": [...], "bits": uint8 packed mask, "values": float32 non-zeros}}}

Conv and linear weights are stored sparse: a pruned network at 97 % sparsity costs ~5 bytes per
surviving weight, and the float values are kept exactly (the integer model is derived from them).

``meta["arch"]`` names an entry of :data:`ARCHITECTURES` (the zoo networks and ``snasnet``), whose
constructor rebuilds the network from ``meta["kwargs"]``; :func:`load_model` loads every one of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from sim.errors import UserError

from .layers import prunable
from .snasnet import snasnet_from_config
from .train import atomic_save, load_checkpoint
from .zoo import VARIANT_ARCHS, VARIANTS, ZOO, build

FORMAT = "loas-snn/1"

#: Architecture name -> constructor taking a checkpoint's ``meta["kwargs"]`` (a dict): every zoo
#: network (keyword arguments of its builder) and ``snasnet`` (its :attr:`SNASNet.config`).
ARCHITECTURES: dict[str, Callable[[dict], nn.Module]] = {
    **{name: (lambda kwargs, name=name: build(name, **kwargs)) for name in ZOO},
    "snasnet": snasnet_from_config,
}


#: Base width of the zoo networks that take one (``width=None`` in :func:`model_meta`).
DEFAULT_WIDTH = {"default": 16, "resnet19": 64}


def model_meta(arch: str, *, dataset: str, T: int = 4, n_mask: int = 0, width: int | None = None,
               variant: str | None = None) -> dict:
    """The metadata that rebuilds a zoo network (constructor arguments) and names its data.

    ``width`` is the base width of the networks in :data:`DEFAULT_WIDTH` (None = its default).
    ``variant`` ('loas' or 'ours', None = 'loas') is recorded for the networks in
    :data:`~models.zoo.VARIANT_ARCHS`.

    Raises
    ------
    UserError
        For an unknown architecture, or a width or variant given to a network without one.
    """
    if arch not in ZOO:
        raise UserError(f"--model: unknown model {arch!r} (known: {', '.join(ZOO)})")
    kwargs = {"T": T, "n_mask": n_mask}
    if arch in VARIANT_ARCHS:
        if variant not in (None, *VARIANTS):
            raise UserError(f"--variant: must be one of {', '.join(VARIANTS)}, got {variant!r}")
        kwargs["variant"] = variant or "loas"
    elif variant is not None:
        raise UserError(f"--variant: {arch} has one form (variants exist for {', '.join(VARIANT_ARCHS)})")
    if arch in DEFAULT_WIDTH:
        if arch == "default" or width is not None:  # default: always recorded, as before
            kwargs["width"] = DEFAULT_WIDTH[arch] if width is None else width
    elif width is not None:
        raise UserError(f"--width: {arch} has a fixed width (widths exist for {', '.join(DEFAULT_WIDTH)})")
    if dataset == "cifar100":
        kwargs["classes"] = 100
    return {"arch": arch, "kwargs": kwargs, "dataset": dataset}


def build_from_meta(meta: dict):
    """Build the network described by ``meta`` (see :func:`model_meta`; any :data:`ARCHITECTURES`).

    Raises
    ------
    UserError
        If the architecture is unknown or its keyword arguments do not build it (bad T, n_mask...).
    """
    arch = meta.get("arch")
    if arch not in ARCHITECTURES:
        raise UserError(f"model metadata {meta!r}: unknown architecture {arch!r} "
                        f"(known: {', '.join(ARCHITECTURES)})")
    try:
        kwargs = dict(meta["kwargs"])
        if arch in VARIANT_ARCHS:
            kwargs.setdefault("variant", "ours")  # checkpoints from before variants were ours
        return ARCHITECTURES[arch](kwargs)
    except (KeyError, ValueError, TypeError) as exc:
        raise UserError(f"model metadata {meta!r}: {exc}") from None


def save_model(model, meta: dict, path, record: dict | None = None) -> None:
    """Write ``model`` in the compact format (atomically)."""
    sparse_names = {n for n, _ in prunable(model)}
    dense, sparse = {}, {}
    for name, t in model.state_dict().items():
        t = t.detach().cpu()
        if name in sparse_names:
            mask = (t != 0).flatten().numpy()
            sparse[name] = {"shape": list(t.shape),
                            "bits": torch.from_numpy(np.packbits(mask)),
                            "values": t.flatten()[torch.from_numpy(mask)].float().clone()}
        else:
            dense[name] = t.clone()
    atomic_save({"format": FORMAT, "meta": meta, "record": record or {}, "dense": dense,
                 "sparse": sparse}, path)


def decode_state(path, ck: dict) -> dict[str, torch.Tensor]:
    """The state dict of a compact checkpoint ``ck`` (read from ``path``): dense tensors as stored,
    sparse weights rebuilt from their bitmask and non-zero values.

    Raises
    ------
    UserError
        If a sparse entry's mask and values disagree (naming the file and the entry).
    """
    state = dict(ck["dense"])
    for name, s in ck["sparse"].items():
        where = f"{path}: field 'sparse.{name}'"
        if not (isinstance(s, dict) and isinstance(s.get("shape"), (list, tuple))
                and all(isinstance(d, int) and d >= 0 for d in s["shape"])
                and isinstance(s.get("bits"), torch.Tensor) and s["bits"].dtype == torch.uint8
                and isinstance(s.get("values"), torch.Tensor)):
            raise UserError(f"{where}: expected {{shape: [ints], bits: uint8 tensor, values: tensor}}")
        n = int(np.prod(s["shape"], dtype=object))
        if -(-n // 8) != s["bits"].numel():  # the mask holds the shape's bits: bounds n by the file
            raise UserError(f"{where}: shape {list(s['shape'])} needs {-(-n // 8)} mask bytes, "
                            f"the mask has {s['bits'].numel()}")
        mask = np.unpackbits(s["bits"].numpy(), count=n).astype(bool)
        if int(mask.sum()) != s["values"].numel():
            raise UserError(f"{path}: field 'sparse.{name}': mask and values disagree")
        w = torch.zeros(n, dtype=torch.float32)
        w[torch.from_numpy(mask)] = s["values"].flatten().float()
        state[name] = w.reshape(s["shape"])
    return state


def _check_meta(path, meta, field: str = "meta") -> dict:
    if not isinstance(meta, dict) or not isinstance(meta.get("arch"), str) or not isinstance(meta.get("kwargs"), dict):
        raise UserError(f"{path}: field '{field}': missing or not {{arch: name, kwargs: {{...}}}} "
                        f"(not a checkpoint written by loas)")
    if any(not isinstance(k, str) for k in meta["kwargs"]):
        raise UserError(f"{path}: field '{field}.kwargs': keys must be names")
    return meta


def _check_compact(path, ck) -> None:
    for key in ("dense", "sparse"):
        if not isinstance(ck.get(key), dict) or any(not isinstance(k, str) for k in ck[key]):
            raise UserError(f"{path}: field '{key}': missing or not a mapping of tensor names")
    bad = [k for k, v in ck["dense"].items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise UserError(f"{path}: field 'dense.{bad[0]}': not a tensor")
    if not isinstance(ck.get("record", {}), dict):
        raise UserError(f"{path}: field 'record': not a mapping")


def load_model(path, *, n_mask: int | None = None, T: int | None = None, archs=tuple(ZOO),
               hint: str = "use loas nas for SNASNet checkpoints"):
    """Load a compact checkpoint (or a round checkpoint of ``loas prune``) -> ``(model, ckpt)``.

    Parameters
    ----------
    path : str or Path
        The checkpoint.
    n_mask, T : int, optional
        Override the stored values (None: keep them).
    archs : iterable of str
        Architectures the caller accepts (default: the zoo); ``meta.arch`` outside them is refused.
    hint : str
        Appended to that refusal (where to load such a checkpoint instead).

    Raises
    ------
    UserError
        If the file is missing, not a checkpoint, of an architecture outside ``archs``, or its
        tensors do not fit the architecture.
    """
    ck = load_checkpoint(path)
    if ck.get("format") == FORMAT:
        meta = _check_meta(path, ck.get("meta"))
        _check_compact(path, ck)
        state = decode_state(path, ck)
    elif "settings" in ck and "model" in ck:  # a round_XX.pt of loas prune
        settings = ck["settings"]
        meta = _check_meta(path, settings.get("meta") if isinstance(settings, dict) else None, "settings.meta")
        state = ck["model"]
        if not isinstance(state, dict) or any(not isinstance(v, torch.Tensor) for v in state.values()):
            raise UserError(f"{path}: field 'model': not a state dict of tensors")
    else:
        raise UserError(f"{path}: field 'format': not a loas model checkpoint")
    archs = tuple(archs)
    if meta.get("arch") not in archs:
        raise UserError(f"{path}: field 'meta.arch': {meta.get('arch')!r} is not "
                        f"{' or '.join(archs)} ({hint})")
    meta = {**meta, "kwargs": dict(meta["kwargs"])}
    if n_mask is not None:
        meta["kwargs"]["n_mask"] = n_mask
    if T is not None:
        meta["kwargs"]["T"] = T
    try:
        model = build_from_meta(meta)
    except UserError as exc:
        raise UserError(f"{path}: field 'meta.kwargs': {exc}") from None
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, KeyError) as exc:
        raise UserError(f"{path}: field 'state': does not fit {meta['arch']}: {exc}") from None
    model.eval()
    return model, {**ck, "meta": meta}


def mask_from_model(model) -> dict[str, torch.Tensor]:
    """Masks of the currently non-zero weights (fine-tuning keeps zeros at zero with them)."""
    return {n: p.detach() != 0 for n, p in prunable(model)}


