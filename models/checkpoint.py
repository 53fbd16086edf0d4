"""Compact model checkpoints: architecture metadata + pruned weights stored as bitmask and non-zeros.

Format (a dict readable with ``torch.load(weights_only=True)``)::

    {"format": "loas-snn/1",
     "meta": {"arch": "default", "kwargs": {...}, "dataset": "fashion-mnist"},
     "record": {...},                       # accuracy, sparsity, recipe: provenance
     "dense": {name: tensor},               # BN parameters and statistics, biases
     "sparse": {name: {"shape": [...], "bits": uint8 packed mask, "values": float32 non-zeros}}}

Conv and linear weights are stored sparse: a pruned network at 97 % sparsity costs ~5 bytes per
surviving weight, and the float values are kept exactly (the integer model is derived from them).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sim.errors import UserError

from .layers import prunable
from .train import atomic_save, load_checkpoint
from .zoo import ZOO, build

FORMAT = "loas-snn/1"


def model_meta(arch: str, *, dataset: str, T: int = 4, n_mask: int = 0, width: int = 16) -> dict:
    """The metadata that rebuilds a zoo network (constructor arguments) and names its data."""
    if arch not in ZOO:
        raise UserError(f"--model: unknown model {arch!r} (known: {', '.join(ZOO)})")
    kwargs = {"T": T, "n_mask": n_mask}
    if arch == "default":
        kwargs["width"] = width
    if dataset == "cifar100":
        kwargs["classes"] = 100
    return {"arch": arch, "kwargs": kwargs, "dataset": dataset}


def build_from_meta(meta: dict):
    """Build the network described by ``meta`` (see :func:`model_meta`).

    Raises
    ------
    UserError
        If T or n_mask are invalid or the architecture is unknown.
    """
    try:
        return build(meta["arch"], **meta["kwargs"])
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


def load_model(path, *, n_mask: int | None = None, T: int | None = None):
    """Load a compact checkpoint (or a round checkpoint of ``loas prune``) -> ``(model, ckpt)``.

    ``n_mask`` and ``T`` override the stored values.

    Raises
    ------
    UserError
        If the file is missing, not a checkpoint, or its tensors do not fit the architecture.
    """
    ck = load_checkpoint(path)
    if ck.get("format") == FORMAT:
        meta = ck["meta"]
        state = dict(ck["dense"])
        for name, s in ck["sparse"].items():
            n = int(np.prod(s["shape"]))
            mask = np.unpackbits(s["bits"].numpy(), count=n).astype(bool)
            w = torch.zeros(n, dtype=torch.float32)
            if int(mask.sum()) != s["values"].numel():
                raise UserError(f"{path}: field 'sparse.{name}': mask and values disagree")
            w[torch.from_numpy(mask)] = s["values"]
            state[name] = w.reshape(s["shape"])
    elif "settings" in ck and "model" in ck:  # a round_XX.pt of loas prune
        meta = ck["settings"]["meta"]
        state = ck["model"]
    else:
        raise UserError(f"{path}: field 'format': not a loas model checkpoint")
    meta = {**meta, "kwargs": dict(meta["kwargs"])}
    if n_mask is not None:
        meta["kwargs"]["n_mask"] = n_mask
    if T is not None:
        meta["kwargs"]["T"] = T
    model = build_from_meta(meta)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise UserError(f"{path}: field 'state': does not fit {meta['arch']}: {exc}") from None
    model.eval()
    return model, {**ck, "meta": meta}


def mask_from_model(model) -> dict[str, torch.Tensor]:
    """Masks of the currently non-zero weights (fine-tuning keeps zeros at zero with them)."""
    return {n: p.detach() != 0 for n, p in prunable(model)}


