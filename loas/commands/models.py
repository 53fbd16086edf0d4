"""`loas train | prune | profile | finetune | export` and `loas trace import-prosperity` (models/)."""

from __future__ import annotations

import argparse
import os
import sys

from loas.commands import add_json, emit, group
from loas.options import (add_checkpoint, add_dataset, add_n_mask, add_out, add_samples, add_seed, add_T,
                          add_threads, add_training, finite_float, int_range, non_negative, positive)
from sim.errors import UserError


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", choices=("default", "vgg16", "resnet19", "alexnet"),
                   help="zoo network")
    p.add_argument("--width", type=int_range(1, 1024), default=None,
                   help="base width of default (default: 16) or resnet19 (default: 64)")
    p.add_argument("--variant", default=None, choices=("loas", "ours"),
                   help="vgg16/resnet19/alexnet: the LoAS code's network (default) or ours (models/README.md)")
    add_T(p)
    add_n_mask(p)


def _data_args(p: argparse.ArgumentParser, default: str | None = "fashion-mnist") -> None:
    add_dataset(p, default)
    add_threads(p)


def _train_args(p: argparse.ArgumentParser, **defaults) -> None:
    add_training(p, **defaults)
    if not defaults.get("prefix"):
        p.add_argument("--loss", default="per_timestep", choices=("per_timestep", "mean_logits"),
                       help="mean of the per-timestep cross-entropies (LoAS) or CE of the mean logits")


def _train_config(args, epochs=None, lr=None):
    from models.train import TrainConfig

    pad = args.pad if args.pad is not None else (4 if args.dataset.startswith("cifar") else 2)
    return TrainConfig(epochs=epochs if epochs is not None else args.epochs,
                       lr=lr if lr is not None else args.lr, momentum=args.momentum,
                       weight_decay=args.weight_decay, lr_min_ratio=args.lr_min_ratio,
                       batch_size=args.batch_size, seed=args.seed,
                       train_subset=args.train_subset, pad=pad, flip=not args.no_flip,
                       cutout=args.cutout, loss=args.loss)


def _setup(args):
    import torch

    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)


def _meta(args) -> dict:
    from models.checkpoint import model_meta

    return model_meta(args.model, dataset=args.dataset, T=args.T, n_mask=args.n_mask,
                      width=args.width, variant=args.variant)


def check_subset(n, available: int, flag: str):
    """A subset size of a user option: None (all) or 1..available; else UserError naming it."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= available):
        raise UserError(f"{flag}: must be in 1..{available} (the samples there are), got {n!r}")
    return n


def _load_data(args, splits=("train", "test")):
    from models.data import load_dataset

    out = []
    for s in splits:
        ds = load_dataset(args.dataset, args.data, s)
        if s == "test":
            ds = ds.subset(check_subset(args.test_subset, len(ds), "--test-subset"))
        out.append(ds)
    return out


def cmd_train(args) -> int:
    from pathlib import Path

    from models.checkpoint import build_from_meta, save_model
    from models.train import default_device, evaluate, seed_everything, train

    _setup(args)
    meta = _meta(args)
    train_ds, test_ds = _load_data(args)
    seed_everything(args.seed)
    model = build_from_meta(meta).to(default_device())
    out = Path(args.out)
    state = out.with_name(out.name + ".state")
    res = train(model, train_ds, _train_config(args), state, tag={"meta": meta})
    acc = evaluate(model, test_ds, progress=True)
    save_model(model, meta, out, record={"test_acc": acc, "train_seconds": res["seconds"]})
    state.unlink(missing_ok=True)  # the run finished: nothing to resume
    emit(args, {"checkpoint": str(out), "test_acc": acc, "seconds": res["seconds"]},
          f"test accuracy {acc:.4f}; checkpoint {out}")
    return 0


def round_recipe(prune: dict, records: list[dict], dataset: str) -> dict:
    """The recipe of a pruned checkpoint as it was really made, round by round.

    A run may be a branch (round files taken over from another directory with other settings), so
    each round's rate, epochs and learning rate come from the settings that round was made with
    (``record["settings"]``, else ``prune``, the settings of the run that made the last rounds):
    ``{"dataset", "scope", "rewind_epoch", "rewind", "train", "rounds": [{"round", "rate",
    "epochs", "lr", "mask_sparsity", "weight_sparsity", "test_acc", "train_seconds"}, ..]}``.
    """
    rows = []
    for r in records:
        s = r.get("settings", {}).get("prune", prune)
        t = s["dense"] if r["round"] == 0 else s["retrain"]
        rows.append({"round": r["round"], "rate": None if r["round"] == 0 else s["rate"],
                     "epochs": t["epochs"], "lr": t["lr"],
                     **{k: r[k] for k in ("mask_sparsity", "weight_sparsity", "test_acc", "train_seconds")
                        if k in r}})
    first = records[0].get("settings", {}).get("prune", prune) if records else prune
    train = {k: v for k, v in first["dense"].items() if k not in ("epochs", "lr")}
    return {"dataset": dataset, "scope": first["scope"], "rewind_epoch": first["rewind_epoch"],
            "rewind": first.get("rewind", "state"), "train": train, "rounds": rows}


def cmd_prune(args) -> int:
    from pathlib import Path

    from models.checkpoint import build_from_meta, save_model
    from models.prune import PruneConfig, load_verified, round_path, run_lth
    from models.train import default_device

    _setup(args)
    meta = _meta(args)
    from models.prune import rewind_epoch_from_fraction, rounds_from_iterations

    if args.rounds is not None and args.iterations is not None:
        raise UserError("--rounds/--iterations: give one (iterations = rounds + 1, the dense one counts)")
    rounds = args.rounds if args.rounds is not None else rounds_from_iterations(
        args.iterations if args.iterations is not None else 15)
    rewind_epoch = args.rewind_epoch if args.rewind_epoch is not None else \
        rewind_epoch_from_fraction(args.rewind_fraction, args.epochs)
    cfg = PruneConfig(rounds=rounds, rate=args.rate, scope=args.scope,
                      rewind_epoch=rewind_epoch, rewind=args.rewind, bn_batches=args.bn_batches,
                      dense=_train_config(args),
                      retrain=_train_config(args, epochs=args.round_epochs or args.epochs,
                                            lr=args.round_lr or args.lr))
    if args.round_train_subset is not None:
        cfg.retrain.train_subset = args.round_train_subset
    train_ds, test_ds = _load_data(args)
    dev = default_device()
    records = run_lth(lambda: build_from_meta(meta).to(dev), train_ds, test_ds, cfg, args.out,
                      meta=meta)
    last = records[-1]
    if args.save:
        model = build_from_meta(meta)
        model.load_state_dict(load_verified(round_path(args.out, last["round"]))["model"])
        recipe = round_recipe(cfg.to_dict(), records, args.dataset)
        save_model(model, meta, Path(args.save), record={
            "test_acc": last["test_acc"], "weight_sparsity": last["weight_sparsity"],
            "train_seconds": sum(r["train_seconds"] for r in records), "recipe": recipe})
    rows = [f"round {r['round']:2d}  sparsity {r['weight_sparsity']:.4f}  test acc {r['test_acc']:.4f}"
            for r in records]
    emit(args, {"rounds": [{k: v for k, v in r.items() if k != "history"} for r in records]},
          "\n".join(rows))
    return 0


def _ck_dataset(args, ck) -> str:
    """--dataset, or the dataset the checkpoint names (refused when it names none we know)."""
    from loas.options import DATASETS

    ds = args.dataset or ck["meta"].get("dataset")
    if ds not in DATASETS:
        raise UserError(f"{args.checkpoint}: field 'meta.dataset': {ds!r} is not one of {', '.join(DATASETS)}; "
                        f"give --dataset")
    return ds


def _test_batches(args, ds, batch_size=500):
    from models.data import batches

    return batches(ds, batch_size), (len(ds) + batch_size - 1) // batch_size


def cmd_profile(args) -> int:
    from models.checkpoint import load_model
    from models.data import load_dataset
    from models.profile import format_table, profile_model

    _setup(args)
    model, ck = load_model(args.checkpoint, n_mask=args.n_mask)
    ds = load_dataset(_ck_dataset(args, ck), args.data, "test")
    ds = ds.subset(check_subset(args.test_subset, len(ds), "--test-subset"))
    it, total = _test_batches(args, ds)
    rep = profile_model(model, it, progress=True, total=total)
    rep["checkpoint"] = str(args.checkpoint)
    rep["model"] = ck["meta"]["arch"]
    variant = ck["meta"]["kwargs"].get("variant")
    if variant:
        rep["variant"] = variant
    head = f"{rep['model']}" + (f" (variant {variant})" if variant else "") + f", {args.checkpoint}\n"
    emit(args, rep, head + format_table(rep))
    return 0


def cmd_finetune(args) -> int:
    from pathlib import Path

    from models.checkpoint import load_model, save_model
    from models.finetune import finetune

    _setup(args)
    model, ck = load_model(args.checkpoint)
    args.dataset = _ck_dataset(args, ck)
    train_ds, test_ds = _load_data(args)
    cfg = _train_config(args)
    out = Path(args.out)
    state = out.with_name(out.name + ".state")
    res = finetune(model, train_ds, test_ds, cfg, args.n_mask, state)
    meta = {**ck["meta"], "kwargs": {**ck["meta"]["kwargs"], "n_mask": args.n_mask}}
    save_model(model, meta, out, record={**ck.get("record", {}), "finetune": res,
                                         "test_acc": res["acc_final"]})
    state.unlink(missing_ok=True)  # the run finished: nothing to resume
    lines = [f"unmasked {res['acc_unmasked']:.4f}", f"n_mask {args.n_mask} {res['acc_masked']:.4f}"]
    lines += [f"epoch {h['epoch']} {h['test_acc']:.4f}" for h in res["epochs"]]
    lines.append(f"best {res['acc_best']:.4f} (epoch {res['best_epoch']}), final {res['acc_final']:.4f}")
    emit(args, res, "\n".join(lines) + f"\ncheckpoint {out}")
    return 0


def cmd_export(args) -> int:
    import time
    from pathlib import Path

    from models.checkpoint import load_model
    from models.data import load_dataset, normalise
    from models.data import batches
    from models.export import check_finite_state, export_workload, file_sha256, float_vs_integer
    from sim.atomic import check_target
    from sim.trace import WORKLOAD_TARGET

    name = args.name or Path(args.out).name  # only recorded: the path is --out
    check_target(args.out, force=args.force, **WORKLOAD_TARGET)  # before any work
    _setup(args)
    t0 = time.time()
    model, ck = load_model(args.checkpoint, n_mask=args.n_mask)
    check_finite_state(model, str(args.checkpoint))
    meta = ck["meta"]
    dataset = _ck_dataset(args, ck)
    ds = load_dataset(dataset, args.data, "test")
    idx = slice(args.first, args.first + args.samples)
    images, labels = normalise(ds.images[idx], ds.name), ds.labels[idx]
    if len(labels) < args.samples:
        raise UserError(f"--samples: the test set has only {len(ds)} samples after --first {args.first}")
    record = ck.get("record", {})
    prov = {"model": meta["arch"], "model_kwargs": meta["kwargs"], "dataset": dataset,
            "test_samples": f"{args.first}..{args.first + args.samples - 1}",
            "checkpoint": str(args.checkpoint), "checkpoint_sha256": file_sha256(args.checkpoint),
            "command": "loas " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("loas") else None}
    for k in ("test_acc", "weight_sparsity", "train_seconds", "recipe"):
        if k in record:
            prov[k] = record[k]
    if args.check_samples:
        check = float_vs_integer(model, batches(ds.subset(args.check_samples), 250))
        prov["float_vs_integer"] = {k: (round(v, 6) if isinstance(v, float) else v)
                                    for k, v in check.items() if k != "spike_agreement"}
        prov["float_vs_integer"]["spike_agreement"] = {
            k: round(v, 6) for k, v in check["spike_agreement"].items()}
    prov = {k: v for k, v in prov.items() if v is not None}
    rep = export_workload(model, images, labels, args.out, name=name, provenance=prov, progress=True,
                          threads=args.threads or 1, force=args.force)
    rep["seconds"] = time.time() - t0
    lines = [f"{'layer':<8}{'M':>6}{'K':>6}{'N':>5}{'thr':>7}{'w sp':>8}{'agree(layer)':>14}{'agree(chain)':>14}"]
    def agree(v):
        return f"{v:>14.5f}" if v is not None else f"{'-':>14}"  # a shortcut layer has no float twin

    lines += [f"{r['name']:<8}{r['M']:>6}{r['K']:>6}{r['N']:>5}{r['threshold']:>7}{r['weight_sparsity']:>8.3f}"
              f"{agree(r['agreement_layerwise'])}{agree(r['agreement_end_to_end'])}" for r in rep["layers"]]
    lines.append(f"float acc {rep['float_acc']:.4f}, integer acc {rep['integer_acc']:.4f} on "
                 f"{rep['samples']} samples; golden check: all layers equal; {rep['seconds']:.1f} s")
    if args.check_samples:
        rep["float_vs_integer"] = check
        lines.append(f"first {check['samples']} test samples: float acc {check['float_acc']:.4f}, "
                     f"integer acc {check['integer_acc']:.4f}, same prediction "
                     f"{check['prediction_agreement']:.4f}")
    lines.append(f"workload written to {args.out}")
    emit(args, rep, "\n".join(lines))
    return 0


def cmd_import_prosperity(args) -> int:
    from pathlib import Path

    from models.prosperity import import_prosperity
    from sim.atomic import check_target
    from sim.trace import TRACES_DIR, WORKLOAD_TARGET, check_workload_name

    check_workload_name(args.name)
    out = Path(args.out) if args.out else TRACES_DIR / args.name
    check_target(out, force=args.force, **WORKLOAD_TARGET)  # before any work
    _setup(args)
    rep = import_prosperity(args.file, out, name=args.name, arch=args.arch, weight_sparsity=args.weight_sparsity,
                            seed=args.seed, checkpoint=args.checkpoint, n_mask=args.n_mask, force=args.force)
    lines = [f"{r['name']:<18} M {r['M']:>5} K {r['K']:>5} N {r['N']:>4} k{r['kernel']} s{r['stride']}"
             f"  spike sp {r['spike_sparsity']:.3f}  weight sp {r['weight_sparsity']:.3f}" for r in rep["layers"]]
    lines.append(f"LoAS {rep['arch']}: workload written to {out}")
    emit(args, rep, "\n".join(lines))
    return 0



def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a zoo SNN (SGD + cosine, resumable)")
    _model_args(p)
    _data_args(p)
    _train_args(p)
    add_out(p, what="checkpoint file to write", required=True)
    add_json(p)
    p.set_defaults(func=cmd_train, out_kind="file")

    p = subparsers.add_parser("prune", help="lottery-ticket pruning with late rewinding (resumable)")
    _model_args(p)
    _data_args(p)
    _train_args(p)
    p.add_argument("--iterations", type=positive, default=None,
                   help="LTH iterations counting the dense one (LoAS --prune_iterations; default: 15 = 14 prunes)")
    p.add_argument("--rounds", type=non_negative, default=None,
                   help="pruning rounds after the dense round (= iterations - 1)")
    p.add_argument("--rate", type=finite_float(0, 1, lo_open=True, hi_open=True), default=0.25,
                   help="fraction of surviving weights pruned per round")
    p.add_argument("--scope", default="global", choices=("global", "local"),
                   help="one magnitude threshold over all weights (global) or per layer (local)")
    p.add_argument("--rewind-fraction", type=finite_float(0, 1), default=20 / 150,
                   help="rewind point as a fraction of the dense epochs (LoAS: 20 of 150)")
    p.add_argument("--rewind-epoch", type=non_negative, default=None,
                   help="dense epoch to rewind to (default: from --rewind-fraction)")
    p.add_argument("--rewind", default="params", choices=("params", "state"),
                   help="rewind parameters only (LoAS; BN statistics kept) or the whole state dict")
    p.add_argument("--bn-batches", type=non_negative, default=20,
                   help="re-estimate BN statistics over N training batches after each round (0 = off)")
    add_training(p, prefix="round-")
    add_out(p, what="run directory (round checkpoints, masks, log)", required=True)
    p.add_argument("--save", default=None, help="also write the last round as a compact checkpoint (default: no)")
    add_json(p)
    p.set_defaults(func=cmd_prune)

    p = subparsers.add_parser("profile", help="silent-neuron profile per spike layer (LoAS Table II)")
    add_checkpoint(p)
    add_n_mask(p, default=None)
    _data_args(p, default=None)
    add_json(p)
    p.set_defaults(func=cmd_profile)

    p = subparsers.add_parser("finetune", help="fine-tune with an n_mask, pruned weights kept at zero")
    add_checkpoint(p, help="model checkpoint (e.g. a pruned one)")
    p.add_argument("--n-mask", type=int, choices=(0, 1, 2), default=1,
                   help="mask neurons firing once (1) or up to twice (2); 0 = off")
    _data_args(p, default=None)
    _train_args(p, epochs=5, lr=0.02)
    add_out(p, what="checkpoint file to write", required=True)
    add_json(p)
    p.set_defaults(func=cmd_finetune, out_kind="file")

    p = subparsers.add_parser("export", help="export spike layers as a trace workload")
    add_checkpoint(p)
    add_out(p, what="workload directory to write", required=True)
    p.add_argument("--name", default=None, help="workload name (default: the directory name)")
    p.add_argument("--force", action="store_true", help="replace an existing workload at --out")
    add_samples(p, 4)
    p.add_argument("--first", type=non_negative, default=0, help="index of the first test sample")
    p.add_argument("--check-samples", type=non_negative, default=1000,
                   help="measure float vs integer accuracy on the first N test samples (0 = off)")
    add_n_mask(p, default=None)
    add_dataset(p, None, subset=False)
    add_threads(p, help="torch CPU threads (default: torch's for the accuracy check, 1 for the export)")
    add_json(p)
    p.set_defaults(func=cmd_export)

    g = group(subparsers, "trace")
    p = g.add_parser("import-prosperity", help="import LoAS spike data (Prosperity pickle) as a workload")
    p.add_argument("file", help="the pickle (e.g. ../shared/data/prosperity-loas/vgg16_cifar10_loas.pkl)")
    p.add_argument("--name", required=True, help="workload name")
    p.add_argument("--arch", default="auto", choices=("vgg16", "alexnet", "resnet19", "auto"),
                   help="LoAS network the spikes come from (auto: the one whose layer table every entry matches)")
    p.add_argument("--weight-sparsity", default="0.98", metavar="S|FILE.yaml",
                   help="synthetic weights: global sparsity in [0, 1), or a YAML file mapping layer -> sparsity "
                        "(default: 0.98)")
    p.add_argument("--checkpoint", default=None,
                   help="take the weights from this checkpoint of the same architecture instead")
    add_seed(p, "seed of the synthetic weights")
    add_n_mask(p)
    add_out(p, what="workload directory (default: traces/NAME)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing workload of that name or directory")
    add_threads(p)
    add_json(p)
    p.set_defaults(func=cmd_import_prosperity)
