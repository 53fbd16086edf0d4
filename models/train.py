"""Training: SGD + cosine, per-epoch progress bar, atomic checkpoints, resume, pruning masks.

A training run owns one checkpoint file. It is rewritten atomically (temp file in the same
directory, then ``os.replace``) at the end of every epoch, so a run killed at any moment resumes
from the last finished epoch; the batch order of an epoch depends only on (seed, epoch), so the
resumed run replays exactly what the killed one would have done.
"""

from __future__ import annotations

import math
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from sim.atomic import write_file
from sim.errors import UserError

from .data import Augment, Dataset, batches
from .layers import prunable


def log_stderr(msg: str) -> None:
    """Default progress log: stderr, so that ``--json`` output on stdout stays clean."""
    print(msg, file=sys.stderr, flush=True)


def default_device() -> torch.device:
    """CUDA when present, CPU otherwise."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def atomic_save(obj, path) -> None:
    """``torch.save`` whole (:func:`sim.atomic.write_file`: temp file beside ``path``, then rename)."""
    write_file(path, lambda f: torch.save(obj, f))


def atomic_write_text(path, text: str) -> None:
    """Write a text file whole (:func:`sim.atomic.write_file`)."""
    write_file(path, text)


def load_checkpoint(path) -> dict:
    """Load a checkpoint written by this package (plain tensors and containers only).

    Raises
    ------
    UserError
        If the file is missing or not a checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"{path}: not a loadable checkpoint ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(ck, dict):
        raise UserError(f"{path}: field 'root': expected a dict, got {type(ck).__name__}")
    return ck


#: Training losses of :class:`TrainConfig` (``loss``).
LOSSES = ("per_timestep", "mean_logits")


def snn_loss(model: nn.Module, out: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """The training loss of a forward pass: ``out`` are the time-averaged logits; per-timestep
    logits ``[T, B, classes]`` are read from ``model.last_logits`` when the network keeps them."""
    per_t = getattr(model, "last_logits", None)
    if kind == "mean_logits" or per_t is None or per_t.dim() != 3:
        return F.cross_entropy(out, y)
    return F.cross_entropy(per_t.flatten(0, 1), y.repeat(per_t.shape[0]))


def state_digest(ck: dict) -> str:
    """sha256 over the names, shapes, dtypes and bytes of the ``model`` and ``masks`` tensors."""
    import hashlib

    h = hashlib.sha256()
    for part in ("model", "masks"):
        tensors = ck.get(part) or {}
        if not isinstance(tensors, dict):
            return "not a mapping"
        for name, t in sorted(tensors.items(), key=lambda kv: str(kv[0])):
            if not isinstance(t, torch.Tensor):
                return f"{part}.{name} is not a tensor"
            t = t.detach().cpu().contiguous().reshape(-1)
            h.update(f"{part}.{name}:{t.numel()}:{t.dtype};".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (all recorded in the checkpoint).

    Parameters
    ----------
    epochs : int
        Epochs of this run (the cosine schedule spans them).
    lr, momentum, weight_decay : float
        SGD settings; the learning rate follows a cosine from ``lr`` to ``lr * lr_min_ratio``.
    batch_size : int
    seed : int
        Seeds initialisation, batch order and augmentation.
    train_subset : int or None
        Use only the first N training samples.
    pad, flip, cutout :
        :class:`~models.data.Augment` settings.
    loss : str
        ``'per_timestep'``: the mean over t of the cross-entropies of the per-timestep logits (LoAS
        and the LTH-for-SNN code; what ``loas train``/``prune``/``finetune`` use by default);
        ``'mean_logits'``: the cross-entropy of the time-averaged logits.
    """

    epochs: int = 10
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_min_ratio: float = 0.0
    batch_size: int = 128
    seed: int = 0
    train_subset: int | None = None
    pad: int = 0
    flip: bool = False
    cutout: int = 0
    loss: str = "mean_logits"

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise UserError(f"--loss: must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise UserError(f"--{name.replace('_', '-')}: must be a positive int, got {v!r}")
        for name, lo, hi in (("lr", 0.0, None), ("momentum", 0.0, None), ("weight_decay", 0.0, None),
                             ("lr_min_ratio", 0.0, 1.0)):
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= lo \
                and (hi is None or v <= hi) and (name != "lr" or v > 0)
            if not ok:
                bounds = "> 0" if name == "lr" else f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
                raise UserError(f"--{name.replace('_', '-')}: must be a finite number {bounds}, got {v!r}")
        if self.train_subset is not None and (not isinstance(self.train_subset, int) or self.train_subset < 1):
            raise UserError(f"--train-subset: must be a positive int, got {self.train_subset!r}")
        for name in ("pad", "cutout"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise UserError(f"--{name}: must be an int >= 0, got {v!r}")


def make_optimizer(model: nn.Module, cfg: TrainConfig):
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(
        opt, T_max=cfg.epochs, eta_min=cfg.lr * cfg.lr_min_ratio)
    return opt, sched


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor] | None) -> None:
    """Zero pruned weights in place (``masks`` maps prunable weight names to 0/1 tensors)."""
    if not masks:
        return
    with torch.no_grad():
        for name, p in prunable(model):
            if name in masks:
                p.mul_(masks[name].to(p.device, p.dtype))


def _mask_grads(model, masks):
    if not masks:
        return
    for name, p in prunable(model):
        if name in masks and p.grad is not None:
            p.grad.mul_(masks[name].to(p.device, p.dtype))


@torch.no_grad()
def evaluate(model: nn.Module, ds: Dataset, batch_size: int = 500, progress: bool = False,
             desc: str = "eval") -> float:
    """Top-1 accuracy (fraction) of ``model`` on ``ds`` in eval mode."""
    from tqdm import tqdm

    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    correct = 0
    it = batches(ds, batch_size)
    if progress:
        it = tqdm(it, total=(len(ds) + batch_size - 1) // batch_size, desc=desc, leave=False)
    for x, y in it:
        correct += int((model(x.to(dev)).argmax(1).cpu() == y).sum())
    model.train(was)
    return correct / max(1, len(ds))


def train(model: nn.Module, train_ds: Dataset, cfg: TrainConfig, ckpt_path, *,
          masks: dict[str, torch.Tensor] | None = None, tag: dict | None = None,
          on_epoch=None, progress: bool = True, log=log_stderr) -> dict:
    """Train ``model`` for ``cfg.epochs`` epochs, resuming from ``ckpt_path`` if it holds this run.

    Parameters
    ----------
    masks : dict, optional
        Pruning masks; masked weights and their gradients are zeroed so pruned weights stay exactly 0.
    tag : dict, optional
        Identifies the run (e.g. ``{"round": 3}``); a checkpoint with another tag is not resumed.
    on_epoch : callable, optional
        ``on_epoch(epoch_done, model)`` after each epoch (before the checkpoint is written), e.g. to
        save a rewind point; a dict it returns is merged into that epoch's history record.

    Returns
    -------
    dict
        ``{"epochs": .., "history": [{"epoch", "loss", "train_acc", "seconds"}, ..], "seconds": ..}``.

    Raises
    ------
    UserError
        On a ``train_subset`` larger than the training set, or a loss that is NaN or infinite (the
        run stops before that step; the checkpoint of the last finished epoch stays on disk).
    """
    from tqdm import tqdm

    dev = next(model.parameters()).device
    opt, sched = make_optimizer(model, cfg)
    start, history = 0, []
    ckpt_path = Path(ckpt_path)
    tag = dict(tag or {})
    if ckpt_path.is_file():
        ck = load_checkpoint(ckpt_path)
        if ck.get("tag") == tag and ck.get("config") == asdict(cfg):
            if "sha256" in ck and ck["sha256"] != state_digest(ck):
                raise UserError(f"{ckpt_path}: field 'sha256': the stored tensors do not match their digest "
                                f"(the file is damaged); delete it to restart the run")
            try:
                model.load_state_dict(ck["model"])
                opt.load_state_dict(ck["optimizer"])
                sched.load_state_dict(ck["scheduler"])
                start, history = int(ck["epoch"]), list(ck["history"])
            except (KeyError, RuntimeError, ValueError, TypeError) as exc:
                raise UserError(f"{ckpt_path}: field 'state': cannot resume from it ({type(exc).__name__}: "
                                f"{str(exc)[:200]}); delete it to restart the run") from None
            if not 0 <= start <= cfg.epochs:
                raise UserError(f"{ckpt_path}: field 'epoch': {start} outside 0..{cfg.epochs}; delete it")
            log(f"resuming {ckpt_path} at epoch {start}/{cfg.epochs}")
    apply_masks(model, masks)
    aug = Augment(cfg.pad, cfg.flip, cfg.cutout) if (cfg.pad or cfg.flip or cfg.cutout) else None
    if cfg.train_subset is not None and cfg.train_subset > len(train_ds):
        raise UserError(f"--train-subset: {cfg.train_subset} samples asked for, the training set has "
                        f"{len(train_ds)}")
    ds = train_ds.subset(cfg.train_subset)
    nb = (len(ds) + cfg.batch_size - 1) // cfg.batch_size
    for epoch in range(start, cfg.epochs):
        model.train()
        t0 = time.time()
        tot_loss, correct, seen = 0.0, 0, 0
        it = batches(ds, cfg.batch_size, shuffle=True, seed=cfg.seed * 1000 + epoch, augment=aug)
        bar = tqdm(it, total=nb, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress,
                   leave=False, mininterval=5.0)
        shown = 0.0
        for i, (x, y) in enumerate(bar):
            x, y = x.to(dev), y.to(dev)
            out = model(x)
            loss = snn_loss(model, out, y, cfg.loss)
            if not math.isfinite(loss.item()):
                # Stop before the step: the checkpoint on disk (written at the last finished
                # epoch) stays the last good one.
                kept = f"{ckpt_path} (epoch {epoch}) is kept" if epoch > 0 else "none was written"
                raise UserError(f"training diverged: loss {loss.item()} at epoch {epoch + 1}, batch {i + 1}; "
                                f"the last good checkpoint {kept}; try a smaller --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            _mask_grads(model, masks)
            opt.step()
            apply_masks(model, masks)
            tot_loss += loss.item() * len(y)
            correct += int((out.argmax(1) == y).sum())
            seen += len(y)
            if progress and time.time() - shown >= 1.0:
                # refresh=False: the figures appear with the bar's next regular redraw, so
                # mininterval holds (a refreshing set_postfix redraws on every batch).
                bar.set_postfix(loss=f"{tot_loss / seen:.3f}", acc=f"{correct / seen:.3f}", refresh=False)
                shown = time.time()
        sched.step()
        rec = {"epoch": epoch + 1, "loss": tot_loss / max(1, seen), "train_acc": correct / max(1, seen),
               "seconds": time.time() - t0}
        if on_epoch is not None:
            rec.update(on_epoch(epoch + 1, model) or {})
        history.append(rec)
        extra = f" test acc {rec['test_acc']:.4f}" if "test_acc" in rec else ""
        log(f"epoch {epoch + 1}/{cfg.epochs} loss {rec['loss']:.4f} train acc {rec['train_acc']:.4f}"
            f"{extra} ({rec['seconds']:.0f} s)")
        state = {"tag": tag, "config": asdict(cfg), "model": model.state_dict(),
                 "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                 "epoch": epoch + 1, "history": history}
        atomic_save({**state, "sha256": state_digest(state)}, ckpt_path)
    return {"epochs": cfg.epochs, "history": history,
            "seconds": sum(h["seconds"] for h in history)}
