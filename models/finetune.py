"""n_mask fine-tuning (spec/snn.md section 4): accuracy unmasked, masked, then per epoch.

The pruning masks are the currently zero weights of the checkpoint; they are held at exactly zero
through fine-tuning, so the fine-tuned network keeps the lottery ticket's weight sparsity.
"""

from __future__ import annotations

from .checkpoint import mask_from_model
from .data import Dataset
from .train import TrainConfig, evaluate, log_stderr, train


def finetune(model, train_ds: Dataset, test_ds: Dataset, cfg: TrainConfig, n_mask: int, state_path,
             *, progress: bool = True, log=log_stderr) -> dict:
    """Fine-tune ``model`` with ``n_mask`` for ``cfg.epochs`` epochs (resumable via ``state_path``).

    Returns ``{"acc_unmasked", "acc_masked", "epochs": [{"epoch", "test_acc", ...}], "acc_final",
    "acc_best", "best_epoch"}``: the last epoch's accuracy and the best epoch's (what LoAS reports);
    the returned model is the last epoch's.

    Raises
    ------
    ValueError
        If ``n_mask`` is not 0, 1 or 2.
    """
    masks = mask_from_model(model)
    model.n_mask = 0
    acc_unmasked = evaluate(model, test_ds, progress=progress, desc="unmasked")
    model.n_mask = n_mask
    acc_masked = evaluate(model, test_ds, progress=progress, desc=f"n_mask {n_mask}")
    log(f"test accuracy unmasked {acc_unmasked:.4f}, with n_mask {n_mask} {acc_masked:.4f}")

    def on_epoch(epoch, m):
        return {"test_acc": evaluate(m, test_ds, progress=progress, desc="test")}

    res = train(model, train_ds, cfg, state_path, masks=masks, tag={"finetune": n_mask},
                on_epoch=on_epoch, progress=progress, log=log)
    hist = res["history"]
    best = max(hist, key=lambda h: h["test_acc"]) if hist else None
    return {"n_mask": n_mask, "acc_unmasked": acc_unmasked, "acc_masked": acc_masked,
            "epochs": hist, "acc_final": hist[-1]["test_acc"] if hist else acc_masked,
            "acc_best": best["test_acc"] if best else acc_masked,
            "best_epoch": best["epoch"] if best else 0, "seconds": res["seconds"]}
