"""`loas nas search | train | test | export`: SNASNet (spec/snn.md section 5) on LoAS."""

from __future__ import annotations

import argparse
import math
import sys

from loas.commands import add_json, emit, group
from loas.options import (DATASETS, add_checkpoint, add_dataset, add_out, add_samples, add_seed, add_T,
                          add_threads, add_training, positive)
from sim.errors import UserError


def _net_args(p: argparse.ArgumentParser, cnt_mat: bool = True) -> None:
    if cnt_mat:
        p.add_argument("--cnt-mat", nargs="+", metavar="ROW", required=True,
                       help="cell connection matrix, 4 rows of 4 digits 0..4, e.g. 0302 0030 3003 0000")
    p.add_argument("--channels", type=int, default=None,
                   help="cell1 channels C (default: 256 cifar10, 128 cifar100, 32 fashion-mnist)")
    add_T(p)
    p.add_argument("--second-avgpooling", type=int, default=None,
                   help="pool size after cell2 (default: 4 cifar10, 2 otherwise)")


def _data_args(p: argparse.ArgumentParser, default: str | None = "fashion-mnist", subset: bool = False) -> None:
    add_dataset(p, default, subset=subset)
    add_threads(p)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N] (default: auto)")


def _device(args):
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(args.device)
    except RuntimeError:
        raise UserError(f"--device: unknown device {args.device!r} (auto, cpu, cuda)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device: {args.device} requested but CUDA is not available")
    return dev


def _positive(name: str, value) -> None:
    if value is not None and value < 1:
        raise UserError(f"{name}: must be >= 1, got {value}")


def _build(args, matrix, dataset):
    from models.snasnet import build_snasnet

    _positive("--channels", args.channels)
    _positive("--T", args.T)
    _positive("--second-avgpooling", args.second_avgpooling)
    return build_snasnet(matrix, dataset, channels=args.channels, T=args.T,
                         second_avgpooling=args.second_avgpooling)



# search ----------------------------------------------------------------------------------------
def cmd_search(args) -> int:
    from models.data import batches, load_dataset
    from models.snasnet import build_snasnet
    from models.snasnet_search import timed_search

    dev = _device(args)
    for name in ("num_search", "batch_size", "batches", "top"):
        _positive(f"--{name.replace('_', '-')}", getattr(args, name))
    _build(args, "0001 0000 0000 0000", args.dataset)  # validate sizes before loading data
    ds = load_dataset(args.dataset, args.data, "train")
    need = args.batch_size * args.batches
    if len(ds) < need:
        raise UserError(f"--batch-size/--batches: {need} samples needed, the dataset has {len(ds)}")
    xs = [x for _, (x, _) in zip(range(args.batches),
                                 batches(ds, args.batch_size, shuffle=True, seed=args.seed))]

    def build(m):
        return build_snasnet(m, args.dataset, channels=args.channels, T=args.T,
                             second_avgpooling=args.second_avgpooling)

    ranked, seconds = timed_search(build, xs, num_search=args.num_search, seed=args.seed, device=dev,
                                   progress=not args.json)
    best = ranked[0]
    settings = {"dataset": args.dataset, "num_search": args.num_search, "scored": len(ranked),
                "seed": args.seed, "batch_size": args.batch_size, "batches": args.batches, "T": args.T,
                "channels": build(best.matrix).config["channels"], "device": str(dev)}
    obj = {"best": str(best.matrix), "best_score": best.to_dict()["score"], "settings": settings,
           "seconds": seconds, "candidates": [dict(rank=r + 1, **c.to_dict()) for r, c in enumerate(ranked)]}
    lines = [f"{'rank':>4}  {'score':>10}  cnt-mat              edges"]
    for r, c in enumerate(ranked[: args.top]):
        s = f"{c.score:10.3f}" if math.isfinite(c.score) else f"{'-inf':>10}"
        lines.append(f"{r + 1:4d}  {s}  {str(c.matrix):19s}  {c.matrix.describe()}")
    lines.append(f"scored {len(ranked)} cells in {seconds:.1f} s on {dev}")
    lines.append(f"best: --cnt-mat {best.matrix}")
    emit(args, obj, "\n".join(lines))
    return 0


# train / test ----------------------------------------------------------------------------------
def save_snasnet(model, dataset: str, path, record: dict | None = None) -> None:
    """Write a SNASNet in the models/ compact checkpoint format (arch ``snasnet``)."""
    from models.checkpoint import save_model

    save_model(model, {"arch": "snasnet", "kwargs": model.config, "dataset": dataset}, path, record)


def load_snasnet(path):
    """Load a checkpoint written by :func:`save_snasnet` -> ``(model, checkpoint dict)``.

    Raises
    ------
    UserError
        If the file is missing, not a checkpoint, not a SNASNet or does not fit its architecture.
    """
    from models.checkpoint import load_model

    return load_model(path, archs=("snasnet",), hint="use loas train/export for zoo models")


def cmd_train(args) -> int:
    from pathlib import Path

    from models.data import load_dataset
    from models.snasnet import parse_cnt_mat
    from models.train import TrainConfig, evaluate, seed_everything, train

    dev = _device(args)
    matrix = parse_cnt_mat(args.cnt_mat)
    pad = args.pad if args.pad is not None else (4 if args.dataset.startswith("cifar") else 2)
    cfg = TrainConfig(epochs=args.epochs, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
                      lr_min_ratio=args.lr_min_ratio, batch_size=args.batch_size, seed=args.seed,
                      train_subset=args.train_subset, pad=pad, flip=not args.no_flip, cutout=0)
    seed_everything(args.seed)
    model = _build(args, matrix, args.dataset).to(dev)
    train_ds = load_dataset(args.dataset, args.data, "train")
    test_ds = load_dataset(args.dataset, args.data, "test").subset(args.test_subset)
    out = Path(args.out)
    res = train(model, train_ds, cfg, out.with_name(out.name + ".state"),
                tag={"arch": "snasnet", "config": model.config, "dataset": args.dataset},
                progress=not args.json, log=(lambda *a: None) if args.json else print)
    acc = evaluate(model, test_ds, batch_size=args.batch_size, progress=not args.json)
    save_snasnet(model.cpu(), args.dataset, out, record={"test_acc": acc, "train_seconds": res["seconds"],
                                                         "cnt_mat": str(matrix), "epochs": args.epochs})
    emit(args, {"checkpoint": str(out), "cnt_mat": str(matrix), "test_acc": acc, "seconds": res["seconds"],
                 "history": res["history"]},
          f"cnt-mat {matrix}: test accuracy {acc:.4f}; checkpoint {out}")
    return 0


def _checkpoint_dataset(args, ck) -> str:
    ds = args.dataset or ck["meta"].get("dataset")
    if ds not in DATASETS:
        raise UserError(f"--dataset: the checkpoint names no known dataset ({ds!r}); give --dataset")
    return ds


def cmd_test(args) -> int:
    from models.data import load_dataset
    from models.train import evaluate

    dev = _device(args)
    model, ck = load_snasnet(args.checkpoint)
    ds_name = _checkpoint_dataset(args, ck)
    test_ds = load_dataset(ds_name, args.data, "test").subset(args.test_subset)
    _check_shape(model, test_ds, args.checkpoint)
    acc = evaluate(model.to(dev), test_ds, batch_size=args.batch_size, progress=not args.json)
    emit(args, {"checkpoint": args.checkpoint, "cnt_mat": str(model.matrix), "dataset": ds_name,
                 "samples": len(test_ds), "test_acc": acc},
          f"cnt-mat {model.matrix}: test accuracy {acc:.4f} on {len(test_ds)} {ds_name} samples")
    return 0


def _check_shape(model, ds, where) -> None:
    shape = tuple(ds.images.shape[1:])
    if shape != tuple(model.in_shape):
        raise UserError(f"{where}: field 'meta.kwargs.in_shape': the model takes {tuple(model.in_shape)}, "
                        f"the dataset has {shape}")


# export ----------------------------------------------------------------------------------------
def cmd_export(args) -> int:
    import torch

    from models.data import batches, load_dataset
    from models.export import file_sha256
    from models.snasnet import parse_cnt_mat
    from models.snasnet_export import export_snasnet

    _device(args)
    _positive("--samples", args.samples)
    if (args.checkpoint is None) == (args.cnt_mat is None):
        raise UserError("--checkpoint/--cnt-mat: give exactly one (a trained model, or a cell at initialisation)")
    if args.checkpoint:
        model, ck = load_snasnet(args.checkpoint)
        ds_name = _checkpoint_dataset(args, ck)
        prov = {"checkpoint": str(args.checkpoint), "checkpoint_sha256": file_sha256(args.checkpoint),
                "record": {k: v for k, v in ck.get("record", {}).items() if isinstance(v, (int, float, str))}}
    else:
        ds_name = args.dataset or "fashion-mnist"
        torch.manual_seed(args.seed)
        model = _build(args, parse_cnt_mat(args.cnt_mat), ds_name)
        prov = {"checkpoint": None, "checkpoint_sha256": None, "init_seed": args.seed}
    ds = load_dataset(ds_name, args.data, "test").subset(args.samples)
    _check_shape(model, ds, args.checkpoint or "--dataset")
    x, y = next(batches(ds, args.samples))
    prov.update(dataset=ds_name, command="loas nas export " + " ".join(sys.argv[3:] if len(sys.argv) > 3 else []))
    name = args.name or f"snasnet-{str(model.matrix).replace(' ', '-')}"
    rep = export_snasnet(model, x, args.out, name=name, force=args.force, labels=y, provenance=prov,
                         cycles=not args.no_cycles,
                         progress=not args.json)

    def cyc(v):
        return f"{v:>12d}" if v is not None else f"{'-':>12}"

    lines = [f"workload {args.out} ({rep['samples']} sample(s), T={rep['T']}, cnt-mat {rep['cnt_mat']})",
             f"{'layer':12s} {'M':>6} {'K':>6} {'N':>5}  {'silent':>7} {'sparsity':>8} {'LoAS cycles':>12}"]
    for r in rep["layers"]:
        lines.append(f"{r['name']:12s} {r['M']:6d} {r['K']:6d} {r['N']:5d}  {r['silent_ratio']:7.3f} "
                     f"{r['spike_sparsity']:8.3f} {cyc(r['loas_cycles'])}")
    lines.append("per cell (neuron-weighted; cycles of sample 0):")
    for c in rep["cells"]:
        lines.append(f"{c['cell']:12s} layers {c['layers']:2d}  silent ratio {c['silent_ratio']:.3f}  "
                     f"spike sparsity {c['spike_sparsity']:.3f}  LoAS cycles {cyc(c['loas_cycles']).strip()}")
    from sim.config import LoASConfig

    hw_T = LoASConfig().timesteps
    if rep["T"] > hw_T:
        lines.append(f"note: T={rep['T']} > the default LoAS build's {hw_T} timesteps (cycles above assume a "
                     f"build for T={rep['T']}); run loas sim with a --config that sets timesteps: {rep['T']}, "
                     f"or export with --T {hw_T}")
    emit(args, rep, "\n".join(lines))
    return 0


def register(subparsers) -> None:
    g = group(subparsers, "nas", "SNASNet: cell search without training, train, test, export to traces")

    p = g.add_parser("search", help="rank random cells by the spike-kernel score at initialisation")
    _net_args(p, cnt_mat=False)
    _data_args(p)
    p.add_argument("--num-search", type=int, default=5000, help="candidates to score")
    p.add_argument("--batch-size", type=int, default=64, help="samples per scoring batch (kernel size)")
    p.add_argument("--batches", type=int, default=2, help="batches the score is averaged over")
    add_seed(p, "seeds the candidates, their weights and the batches")
    p.add_argument("--top", type=int, default=10, help="ranked candidates to print")
    add_json(p)
    p.set_defaults(func=cmd_search)

    p = g.add_parser("train", help="train a SNASNet cell (SGD + cosine, resumable)")
    _net_args(p)
    _data_args(p, subset=True)
    add_training(p, epochs=300, lr=0.1, batch_size=64, lr_min_ratio=0.01, cutout=False)
    add_out(p, what="checkpoint file to write", required=True)
    add_json(p)
    p.set_defaults(func=cmd_train, out_kind="file")

    p = g.add_parser("test", help="test accuracy of a trained SNASNet checkpoint")
    add_checkpoint(p)
    _data_args(p, default=None, subset=True)
    p.add_argument("--batch-size", type=positive, default=256, help="evaluation batch size")
    add_json(p)
    p.set_defaults(func=cmd_test)

    p = g.add_parser("export", help="write a SNASNet's spike layers (backward-edge convs too) as a trace workload")
    add_checkpoint(p, required=False, help="trained SNASNet (or give --cnt-mat for an untrained one)")
    p.add_argument("--cnt-mat", nargs="+", metavar="ROW", default=None,
                   help="cell of an untrained network (default: none; give this or the checkpoint)")
    _net_args(p, cnt_mat=False)
    _data_args(p, default=None)
    add_seed(p, "initialisation seed with --cnt-mat")
    add_samples(p, 1, "test samples to record")
    add_out(p, what="workload directory to write", required=True)
    p.add_argument("--name", default=None, help="workload name (default: snasnet-<cnt-mat>)")
    p.add_argument("--force", action="store_true", help="replace an existing workload at --out")
    p.add_argument("--no-cycles", action="store_true", help="skip the LoAS cycle model")
    add_json(p)
    p.set_defaults(func=cmd_export)
