"""Lottery-ticket pruning: iterative magnitude pruning with late rewinding (spec/snn.md section 3).

Round 0 trains the dense network and keeps the weights after ``rewind_epoch`` epochs as the rewind
point. Round r >= 1 prunes ``rate`` of the weights that survived round r-1 by magnitude (global over
every conv and linear weight, or per layer), rewinds the survivors to the rewind point (parameters
only by default, as the LTH code does) and retrains with a fresh optimizer and schedule, pruned
weights held at exactly zero. ``PruneConfig.rounds`` counts prunes; the LTH code's iteration count
includes the dense iteration (:func:`rounds_from_iterations`).

On disk (``out_dir``): ``rewind.pt``; ``round_XX.pt`` per finished round (final weights, mask,
accuracy, sparsity); ``train_state.pt`` for the round in progress; ``lth.json``, the per-round log.
A run killed at any moment resumes from the last finished epoch of the round in progress; the masks
of round r are recomputed from ``round_{r-1}.pt``, so nothing is lost or changed by the restart.
To branch a run with other retraining settings, copy ``rewind.pt`` and the ``round_XX.pt`` to keep
into a new directory: their records (and the settings they were made with) are taken over.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from sim.errors import UserError

from .data import Dataset
from .layers import prunable
from .train import (
    TrainConfig,
    apply_masks,
    atomic_save,
    atomic_write_text,
    evaluate,
    load_checkpoint,
    log_stderr,
    seed_everything,
    state_digest,
    train,
)


def full_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """All-ones masks (nothing pruned) for every prunable weight."""
    return {n: torch.ones_like(p, dtype=torch.bool) for n, p in prunable(model)}


def magnitude_masks(model: nn.Module, masks: dict[str, torch.Tensor], rate: float,
                    scope: str = "global") -> dict[str, torch.Tensor]:
    """Prune ``rate`` of the surviving weights by magnitude; return the new masks.

    Exactly ``round(rate * survivors)`` weights are removed (globally, or per layer for
    ``scope='local'``); ties in magnitude are broken by position so the result is deterministic.

    Raises
    ------
    ValueError
        If ``rate`` is not in [0, 1) or ``scope`` is not 'global' or 'local'.
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"rate must be in [0, 1), got {rate!r}")
    if scope not in ("global", "local"):
        raise ValueError(f"scope must be 'global' or 'local', got {scope!r}")
    params = dict(prunable(model))
    names = [n for n in params if n in masks]
    new = {n: masks[n].clone() for n in masks}

    def prune_group(group):
        mags = torch.cat([params[n].detach().abs().flatten().cpu().double() for n in group])
        alive = torch.cat([masks[n].flatten().cpu() for n in group])
        idx = torch.nonzero(alive).flatten()
        k = int(round(rate * idx.numel()))
        if k == 0:
            return
        # stable sort: equal magnitudes are pruned in index order
        order = torch.sort(mags[idx], stable=True).indices[:k]
        flat = alive.clone()
        flat[idx[order]] = False
        off = 0
        for n in group:
            size = masks[n].numel()
            new[n] = flat[off : off + size].reshape(masks[n].shape)
            off += size

    if scope == "global":
        prune_group(names)
    else:
        for n in names:
            prune_group([n])
    return new


def mask_sparsity(masks: dict[str, torch.Tensor]) -> float:
    """Fraction of pruned weights over all masked weights."""
    total = sum(m.numel() for m in masks.values())
    kept = sum(int(m.sum()) for m in masks.values())
    return 1.0 - kept / max(1, total)


def weight_sparsity(model: nn.Module) -> float:
    """Fraction of exactly-zero weights over every conv and linear weight."""
    ps = [p for _, p in prunable(model)]
    total = sum(p.numel() for p in ps)
    zeros = sum(int((p == 0).sum()) for p in ps)
    return zeros / max(1, total)


#: Rewind modes of :class:`PruneConfig`.
REWINDS = ("params", "state")

#: The published recipe (LoAS pruning_gen/config_lth.py, the LTH-for-SNN code): 15 iterations
#: counting the dense one, 25 % per prune, rewind to epoch 20 of 150.
LTH_ITERATIONS = 15
LTH_RATE = 0.25
LTH_REWIND_FRACTION = 20 / 150


def rounds_from_iterations(iterations: int) -> int:
    """Prune rounds of an LTH run of ``iterations`` iterations counted as the LTH code counts them
    (the first, dense iteration included): ``iterations - 1``.

    Raises
    ------
    UserError
        If ``iterations`` is not an int >= 1.
    """
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise UserError(f"--iterations: must be an int >= 1 (the dense iteration counts), got {iterations!r}")
    return iterations - 1


def rewind_epoch_from_fraction(fraction: float, epochs: int) -> int:
    """The dense epoch ``round(fraction * epochs)`` (LoAS: 20 of 150 = fraction 0.1333).

    Raises
    ------
    UserError
        If ``fraction`` is not in [0, 1].
    """
    if not 0.0 <= fraction <= 1.0:
        raise UserError(f"--rewind-fraction: must be in [0, 1], got {fraction!r}")
    return int(round(fraction * epochs))


def rewind(model: nn.Module, point: dict[str, torch.Tensor], masks: dict[str, torch.Tensor],
           mode: str = "params") -> None:
    """Rewind ``model`` to the state dict ``point`` (the rewind point), then apply ``masks``.

    ``mode='params'`` (the LTH code's ``original_initialization``): every parameter (weights,
    biases, BN affine) is set to its rewind value; buffers (BN running statistics) stay as they
    are, i.e. those of the end of the previous round. ``mode='state'``: the whole state dict,
    buffers included.
    """
    if mode not in REWINDS:
        raise ValueError(f"rewind mode must be one of {REWINDS}, got {mode!r}")
    if mode == "state":
        model.load_state_dict(point)
    else:
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(point[name])
    from .train import apply_masks

    apply_masks(model, masks)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, ds: Dataset, n_batches: int, batch_size: int, seed: int = 0) -> None:
    """Re-estimate every BN layer's running statistics from ``n_batches`` training batches (train
    mode, no gradient, cumulative average), so a network trained briefly after a rewind is
    evaluated with statistics of its final weights. 0 batches: nothing."""
    from .data import batches

    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if n_batches <= 0 or not bns:
        return
    was = model.training
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the batches below
    dev = next(model.parameters()).device
    model.train()
    try:
        for i, (x, _) in enumerate(batches(ds, batch_size, shuffle=True, seed=seed)):
            if i >= n_batches:
                break
            model(x.to(dev))
    finally:
        for m, mom in zip(bns, saved):
            m.momentum = mom
        model.train(was)


@dataclass
class PruneConfig:
    """Settings of a lottery-ticket run (recorded in every round checkpoint and the log).

    Parameters
    ----------
    rounds : int
        Pruning rounds after the dense round 0.
    rate : float
        Fraction of surviving weights pruned per round, in (0, 1).
    scope : str
        'global' (one magnitude threshold over all weights) or 'local' (per layer).
    rewind_epoch : int
        Epoch of round 0 whose weights are the rewind point (0 = initialisation, classic LTH).
    dense : TrainConfig
        Training of round 0.
    retrain : TrainConfig
        Training of every later round.
    rewind : str
        'params' (parameters only, BN running statistics kept as they were: the LTH code) or
        'state' (the whole state dict); see :func:`rewind`.
    bn_batches : int
        Training batches over which BN statistics are re-estimated after each round's training,
        before it is evaluated and saved (:func:`recalibrate_bn`; 0 = off).
    """

    rounds: int
    rate: float
    scope: str = "global"
    rewind_epoch: int = 1
    dense: TrainConfig = field(default_factory=TrainConfig)
    retrain: TrainConfig = field(default_factory=TrainConfig)
    rewind: str = "params"
    bn_batches: int = 0

    def __post_init__(self):
        if not isinstance(self.rounds, int) or self.rounds < 0:
            raise UserError(f"--rounds: must be an int >= 0, got {self.rounds!r}")
        if not 0.0 < self.rate < 1.0:
            raise UserError(f"--rate: must be in (0, 1), got {self.rate!r}")
        if self.scope not in ("global", "local"):
            raise UserError(f"--scope: must be 'global' or 'local', got {self.scope!r}")
        if self.rewind not in REWINDS:
            raise UserError(f"--rewind: must be one of {', '.join(REWINDS)}, got {self.rewind!r}")
        if isinstance(self.bn_batches, bool) or not isinstance(self.bn_batches, int) or self.bn_batches < 0:
            raise UserError(f"--bn-batches: must be an int >= 0, got {self.bn_batches!r}")
        if not 0 <= self.rewind_epoch <= self.dense.epochs:
            raise UserError(
                f"--rewind-epoch: must be in 0..{self.dense.epochs} (dense epochs), got {self.rewind_epoch!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def save_verified(ck: dict, path) -> None:
    """Write a run file (rewind point, round) with :func:`state_digest` of its tensors, atomically."""
    atomic_save({**ck, "sha256": state_digest(ck)}, path)


def load_verified(path) -> dict:
    """Read a file of :func:`save_verified`; a changed tensor (a damaged file torch still loads) or a
    missing entry is refused, naming the file, instead of training on garbage.

    Raises
    ------
    UserError
        If the file is unreadable, incomplete or its tensors do not match their digest.
    """
    path = Path(path)
    ck = load_checkpoint(path)
    if not isinstance(ck.get("model"), dict) or any(not isinstance(v, torch.Tensor) for v in ck["model"].values()):
        raise UserError(f"{path}: field 'model': missing or not a state dict; delete it and run again")
    if "sha256" in ck and ck["sha256"] != state_digest(ck):
        raise UserError(f"{path}: field 'sha256': the stored tensors do not match their digest (the file is "
                        f"damaged); delete it and run again")
    if path.name.startswith("round_"):
        for key in ("record", "settings", "masks"):
            if not isinstance(ck.get(key), dict):
                raise UserError(f"{path}: field '{key}': missing; delete it and run again")
        if any(not isinstance(v, torch.Tensor) or v.dtype != torch.bool for v in ck["masks"].values()):
            raise UserError(f"{path}: field 'masks': not boolean tensors; delete it and run again")
    return ck


def _load_state(model, ck: dict, path) -> None:
    try:
        model.load_state_dict(ck["model"])
    except (RuntimeError, KeyError) as exc:
        raise UserError(f"{path}: field 'model': does not fit this network ({str(exc).splitlines()[0]}); "
                        f"delete it and run again") from None


def round_path(out_dir, r: int) -> Path:
    return Path(out_dir) / f"round_{r:02d}.pt"


def run_lth(make_model, train_ds: Dataset, test_ds: Dataset, cfg: PruneConfig, out_dir, *,
            meta: dict | None = None, progress: bool = True, log=log_stderr) -> list[dict]:
    """Run (or resume) lottery-ticket pruning; return the per-round log.

    Parameters
    ----------
    make_model : callable
        ``make_model()`` returns a fresh network on the target device (seeded by the caller).
    meta : dict, optional
        Stored in every round checkpoint (e.g. architecture name and constructor arguments), so a
        round file alone can rebuild its network.

    Raises
    ------
    UserError
        If ``out_dir`` holds a run made with different settings.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "lth.json"
    settings = {"prune": cfg.to_dict(), "meta": meta or {}}
    records: list[dict] = []
    if log_path.is_file():
        try:
            prev = json.loads(log_path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as exc:  # JSONDecodeError, UnicodeDecodeError are ValueErrors
            raise UserError(f"{log_path}: field 'json': unreadable ({type(exc).__name__}: {exc}); the round "
                            f"files rebuild it: delete {log_path.name} and run again") from None
        if not isinstance(prev, dict) or not isinstance(prev.get("rounds", []), list) or not all(
                isinstance(r, dict) and isinstance(r.get("round"), int) for r in prev.get("rounds", [])):
            raise UserError(f"{log_path}: field 'rounds': not the log of loas prune; delete {log_path.name} "
                            f"and run again")
        if prev.get("settings") != settings:
            raise UserError(f"{log_path}: field 'settings': this directory holds a run with other "
                            "settings; use a new --out directory")
        records = prev.get("rounds", [])
    records = [r for r in records if round_path(out, r["round"]).is_file()]
    known = {r["round"] for r in records}
    # Round files copied into a fresh directory (a branch with other retrain settings) carry
    # their own records and settings.
    for r in range(cfg.rounds + 1):
        if r not in known and round_path(out, r).is_file():
            ck = load_verified(round_path(out, r))
            records.append({**ck["record"], "settings": ck["settings"]})
    records.sort(key=lambda r: r["round"])

    def write_log():
        atomic_write_text(log_path, json.dumps({"settings": settings, "rounds": records}, indent=2))

    write_log()
    rewind_path = out / "rewind.pt"
    state_path = out / "train_state.pt"
    for r in range(cfg.rounds + 1):
        if round_path(out, r).is_file():
            continue
        seed_everything(cfg.dense.seed)
        model = make_model()
        if r == 0:
            masks = full_masks(model)
            tcfg = cfg.dense

            def on_epoch(epoch, m):
                if epoch == cfg.rewind_epoch:
                    save_verified({"model": m.state_dict(), "epoch": epoch}, rewind_path)

            if cfg.rewind_epoch == 0 and not rewind_path.is_file():
                save_verified({"model": model.state_dict(), "epoch": 0}, rewind_path)
        else:
            prev = load_verified(round_path(out, r - 1))
            _load_state(model, prev, round_path(out, r - 1))
            if set(prev["masks"]) != set(full_masks(model)):
                raise UserError(f"{round_path(out, r - 1)}: field 'masks': other weights than this network's; "
                                f"delete it and run again")
            masks = magnitude_masks(model, prev["masks"], cfg.rate, cfg.scope)
            if not rewind_path.is_file():
                raise UserError(f"{rewind_path}: rewind point missing; delete {out} and restart")
            try:
                rewind(model, load_verified(rewind_path)["model"], masks, cfg.rewind)
            except (RuntimeError, KeyError) as exc:
                raise UserError(f"{rewind_path}: field 'model': does not fit this network "
                                f"({str(exc).splitlines()[0]}); delete it and run again") from None
            tcfg, on_epoch = cfg.retrain, None
        apply_masks(model, masks)
        log(f"round {r}/{cfg.rounds}: weight sparsity {mask_sparsity(masks):.4f}")
        t0 = time.time()
        res = train(model, train_ds, tcfg, state_path, masks=masks, tag={"round": r},
                    on_epoch=on_epoch, progress=progress, log=log)
        if cfg.bn_batches:
            recalibrate_bn(model, train_ds.subset(tcfg.train_subset), cfg.bn_batches,
                           tcfg.batch_size, seed=tcfg.seed * 1000 + 999)
        acc = evaluate(model, test_ds, progress=progress, desc=f"round {r} test")
        rec = {"round": r, "mask_sparsity": mask_sparsity(masks),
               "weight_sparsity": weight_sparsity(model), "test_acc": acc,
               "train_seconds": res["seconds"], "wall_seconds": time.time() - t0,
               "history": res["history"]}
        save_verified({"model": model.state_dict(), "masks": masks, "record": rec,
                       "settings": settings}, round_path(out, r))
        records.append(rec)
        write_log()
        if state_path.exists():
            state_path.unlink()
        log(f"round {r}: sparsity {rec['weight_sparsity']:.4f} test acc {acc:.4f}")
    return records
