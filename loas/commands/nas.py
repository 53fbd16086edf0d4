"""`loas nas search | train | test | export`: SNASNet (spec/snn.md section 5) on LoAS."""

from __future__ import annotations

import argparse
import math
import sys

from loas.commands import add_json, emit, group
from loas.options import (DATASETS, add_checkpoint, add_dataset, add_engine, add_out, add_samples, add_seed,
                          add_T, add_threads, add_training, int_range, positive)
from sim.errors import UserError

#: SNASNet's timesteps (spec/snn.md section 5, "T = 5 by default"; models.snasnet.build_snasnet's
#: default). A network exported at T = 5 runs on a LoAS built for 5 timesteps (a --config with
#: ``timesteps: 5``); give --T 4 for the default LoAS build.
SNASNET_T = 5


def _cnt_mat_arg(p: argparse.ArgumentParser, required: bool, help_extra: str = "") -> None:
    p.add_argument("--cnt-mat", "--cnt_mat", dest="cnt_mat", nargs="+", metavar="ROW", required=required,
                   default=None,
                   help="cell connection matrix, 4 rows of 4 digits 0..4: 0302 0030 3003 0000 or one quoted "
                        "string '0302 0030 3003 0000'" + help_extra)


def _net_args(p: argparse.ArgumentParser, cnt_mat: bool = True) -> None:
    if cnt_mat:
        _cnt_mat_arg(p, True)
    p.add_argument("--channels", type=int_range(1, 4096), default=None,
                   help="cell1 channels C (default: 256 cifar10, 128 cifar100, 32 fashion-mnist)")
    add_T(p, default=SNASNET_T, why="SNASNet's")
    p.add_argument("--second-avgpooling", type=int_range(1, 64), default=None,
                   help="pool size after cell2 (default: 4 cifar10, 2 otherwise)")
    p.add_argument("--fc1-bias", action="store_true", help="give fc1 a bias (the official network has none)")
    p.add_argument("--init", default="official", choices=("official", "torch"),
                   help="official: kaiming_uniform a=2 convs, Linear N(0, 0.01), zero biases (default); "
                        "torch: the framework defaults")
    p.add_argument("--dropout", default="sample", choices=("sample", "timestep"),
                   help="dropout before fc1: one mask per sample for all T (official, default) or a new "
                        "mask every timestep")
    p.add_argument("--bn-stats", default="timestep", choices=("timestep", "folded"),
                   help="BN batch statistics in train mode: per timestep (official, default) or over T x B")


def _net_options(args) -> dict:
    return dict(fc1_bias=args.fc1_bias, init=args.init, dropout=args.dropout, bn_stats=args.bn_stats)


def _data_args(p: argparse.ArgumentParser, default: str | None = "fashion-mnist", subset: bool = False,
               threads_help: str | None = None) -> None:
    add_dataset(p, default, subset=subset)
    add_threads(p, *([threads_help] if threads_help else []))
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
                         second_avgpooling=args.second_avgpooling, **_net_options(args))



# search ----------------------------------------------------------------------------------------
def cmd_search(args) -> int:
    from pathlib import Path

    from models.data import Augment, batches, load_dataset
    from models.snasnet import parse_cnt_mat
    from models.snasnet_search import (SEARCH_TARGET, FreshBatches, NetSpec, draw_candidates, run_search,
                                       write_search_report)
    from sim import dist
    from sim.atomic import check_target

    check_target(args.out, **SEARCH_TARGET)  # before the work
    dev = _device(args)
    for name in ("num_search", "batch_size", "batches", "top"):
        _positive(f"--{name.replace('_', '-')}", getattr(args, name))
    if args.max_cycles is not None and args.objective != "hw":
        raise UserError("--max-cycles: needs --objective hw")
    _build(args, "0001 0000 0000 0000", args.dataset)  # validate sizes before loading data
    ds = load_dataset(args.dataset, args.data, "train")
    need = args.batch_size * args.batches
    if len(ds) < need:
        raise UserError(f"--batch-size/--batches: {need} samples needed, the dataset has {len(ds)}")
    if args.fresh_batches:
        # the official search: fresh augmented training batches for every candidate
        xs = FreshBatches(ds, args.batch_size, args.batches, args.seed,
                          Augment(pad=4 if args.dataset.startswith("cifar") else 2, flip=True))
    else:
        xs = [x for _, (x, _) in zip(range(args.batches),
                                     batches(ds, args.batch_size, shuffle=True, seed=args.seed))]
    spec = NetSpec(args.dataset, args.channels, args.T, args.second_avgpooling, **_net_options(args))
    hw = args.objective == "hw"
    channels = spec.build(parse_cnt_mat("0001 0000 0000 0000")).config["channels"]
    settings = {"dataset": args.dataset, "num_search": args.num_search, "seed": args.seed,
                "batch_size": args.batch_size, "batches": args.batches, "T": args.T, "channels": channels,
                "second_avgpooling": args.second_avgpooling, "sampler": args.sampler, "celltype": args.celltype,
                "fresh_batches": args.fresh_batches, "dropout_in_score": not args.no_score_dropout,
                "objective": args.objective, **_net_options(args)}
    cands = draw_candidates(args.num_search, args.seed, args.sampler, args.celltype)
    store = dist.ResultStore(Path(args.out) / "store")
    workers = args.workers
    if workers is None and dev.type == "cuda" and not dist.scheduler_address(args.scheduler):
        workers = 1  # one GPU: one worker process
    print(f"scoring {len(cands)} cells ({args.sampler} sampler, {args.celltype} cells, batch {args.batch_size} "
          f"x {args.batches}{', LoAS/SparTen-S cost' if hw else ''}) on {dev}; finished cells are kept in "
          f"{store.dir}", file=sys.stderr)
    ranked, oc = run_search(spec, xs, cands, seed=args.seed, dropout=not args.no_score_dropout, hw=hw, store=store,
                            scheduler=args.scheduler, workers=workers, threads=args.threads or 1,
                            device=args.device if args.device == "auto" else str(dev),
                            progress=not (args.no_progress or args.json))
    if not ranked:
        print(f"loas: all {len(cands)} cells failed (listed above)", file=sys.stderr)
        return 1
    best = ranked[0]
    settings.update(scored=len(ranked), device=str(dev))
    obj = {"best": str(best.matrix), "best_score": best.to_dict()["score"], "settings": settings,
           "seconds": oc.seconds, "computed": oc.computed, "cached": oc.cached, "failures": oc.failures,
           "candidates": [dict(rank=r + 1, **c.to_dict()) for r, c in enumerate(ranked)]}
    lines = [f"{'rank':>4}  {'score':>10}  cnt-mat              edges"]
    for r, c in enumerate(ranked[: args.top]):
        lines.append(f"{r + 1:4d}  {_fmt_score(c.score)}  {str(c.matrix):19s}  {c.matrix.describe()}")
    lines.append(f"scored {oc.computed} cell{'s' * (oc.computed != 1)} in {oc.seconds:.1f} s on {dev}, "
                 f"{oc.cached} from {store.dir}"
                 + (f", {len(oc.failures)} failed" if oc.failures else ""))
    lines.append(f"best: --cnt-mat '{best.matrix}'")
    plot = None
    if hw:
        more, plot = _hw_report(args, ranked, obj)
        lines += more
    files = write_search_report(Path(args.out), obj, plot)
    lines.append(f"report: {', '.join(str(f) for f in files)}")
    obj["report"] = [str(f) for f in files]
    emit(args, obj, "\n".join(lines))
    if oc.failures:
        print(f"loas: {len(oc.failures)} cell{'s' * (len(oc.failures) > 1)} failed (listed above)", file=sys.stderr)
        return 1
    return 0


def _fmt_score(s) -> str:
    return f"{s:10.3f}" if math.isfinite(s) else f"{'-inf':>10}"


def _hw_report(args, ranked, obj):
    """Pareto front of score vs LoAS cycles (table, JSON) and the best cell under --max-cycles:
    ``(lines, plot)``, ``plot(path)`` drawing the PNG into the report folder (None when --png
    names another file, drawn here, or is '')."""
    from pathlib import Path

    from models.snasnet_search import pareto_front

    front = pareto_front(ranked)
    obj["pareto_front"] = [c.to_dict() for c in front]
    lines = ["", f"Pareto front (score up, LoAS cycles down; {len(front)} of {len(ranked)} cells; "
                 "cycles of one sample at initialisation):",
             f"{'score':>10}  {'LoAS cycles':>12}  {'LoAS uJ':>8}  {'SparTen-S cycles':>16}  {'speedup':>7}  cnt-mat"]
    for c in front:
        h = c.hw
        lines.append(f"{_fmt_score(c.score)}  {h['loas_cycles']:12d}  {h['loas_energy_pj'] / 1e6:8.2f}  "
                     f"{h['sparten_cycles']:16d}  {h['sparten_cycles'] / max(1, h['loas_cycles']):7.2f}  {c.matrix}")
    if args.max_cycles is not None:
        ok = [c for c in ranked if c.hw and c.hw["loas_cycles"] <= args.max_cycles and math.isfinite(c.score)]
        if ok:
            b = ok[0]
            obj["best_under_budget"] = b.to_dict()
            lines.append(f"best under --max-cycles {args.max_cycles}: --cnt-mat '{b.matrix}' score {b.score:.3f}, "
                         f"{b.hw['loas_cycles']} LoAS cycles ({b.hw['sparten_cycles']} on SparTen-S)")
        else:
            obj["best_under_budget"] = None
            lines.append(f"no cell fits --max-cycles {args.max_cycles} "
                         f"(fewest: {min(c.hw['loas_cycles'] for c in ranked if c.hw)})")
    plot = None
    if args.png is None:  # in the report folder, written with it
        obj["png"] = str(Path(args.out) / "pareto.png")
        plot = lambda path: _pareto_png(ranked, front, path, args.max_cycles)  # noqa: E731
    elif args.png:
        _pareto_png(ranked, front, args.png, args.max_cycles)
        obj["png"] = str(args.png)
    if "png" in obj:
        lines.append(f"plot: {obj['png']}")
    return lines, plot


def _pareto_png(ranked, front, path, budget) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from pathlib import Path

    pts = [c for c in ranked if c.hw and math.isfinite(c.score)]
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.scatter([c.hw["loas_cycles"] for c in pts], [c.score for c in pts], s=14, c="0.6", label="cells")
    ax.plot([c.hw["loas_cycles"] for c in front], [c.score for c in front], "o-", c="C3", ms=5,
            label="Pareto front")
    if budget is not None:
        ax.axvline(budget, ls="--", c="C0", label=f"--max-cycles {budget}")
    ax.set_xlabel("LoAS cycles (one sample, spike layers of both cells, down conv, fc2)")
    ax.set_ylabel("search score log|det(K / terms)|")
    ax.set_title("SNASNet search: spike-pattern score vs LoAS cycles")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


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
    if not args.no_fc1_warmup:
        from models.data import batches
        from models.snasnet import calibrate_fc1

        x0, _ = next(batches(train_ds.subset(args.train_subset), min(256, len(train_ds)), shuffle=True,
                             seed=args.seed))
        calibrate_fc1(model, x0.to(dev))
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


def spike_counter(model):
    """Forward hooks counting every LIF module's spikes and neurons: returns (counts, remove)."""
    from spikingjelly.activation_based import neuron

    counts: dict[str, list] = {}

    def hook(name):
        def h(mod, inp, out):
            c = counts.setdefault(name, [0.0, 0])
            c[0] += float(out.detach().sum())
            c[1] = int(out[0, 0].numel()) if mod.step_mode == "m" else int(out[0].numel())  # per image
        return h

    hooks = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, neuron.BaseNode)]
    return counts, lambda: [h.remove() for h in hooks]


def cmd_test(args) -> int:
    from models.data import load_dataset
    from models.train import evaluate

    dev = _device(args)
    model, ck = load_snasnet(args.checkpoint)
    ds_name = _checkpoint_dataset(args, ck)
    test_ds = load_dataset(ds_name, args.data, "test").subset(args.test_subset)
    _check_shape(model, test_ds, args.checkpoint)
    counts, remove = spike_counter(model)
    acc = evaluate(model.to(dev), test_ds, batch_size=args.batch_size, progress=not args.json)
    remove()
    n = len(test_ds)
    layers = []
    for name, (spikes, neurons) in counts.items():
        per_image = spikes / n
        layers.append({"layer": name, "spikes_per_image": per_image, "neurons": neurons,
                       "firing_rate": per_image / (neurons * model.T) if neurons else 0.0})
    total = sum(r["spikes_per_image"] for r in layers)
    lines = [f"cnt-mat {model.matrix}: test accuracy {acc:.4f} on {n} {ds_name} samples",
             f"spikes per image (T={model.T}, summed over timesteps):",
             f"{'LIF layer':24s} {'neurons':>9} {'spikes/image':>13} {'rate':>7}"]
    for r in layers:
        lines.append(f"{r['layer']:24s} {r['neurons']:9d} {r['spikes_per_image']:13.1f} {r['firing_rate']:7.4f}")
    lines.append(f"{'total':24s} {'':9s} {total:13.1f}")
    emit(args, {"checkpoint": args.checkpoint, "cnt_mat": str(model.matrix), "dataset": ds_name,
                 "samples": n, "test_acc": acc, "spikes_per_image": total, "layers": layers},
          "\n".join(lines))
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

    p = g.add_parser("search", help="rank random cells by the spike-kernel score at initialisation "
                                     "(on a Dask cluster, embedded by default; resumes)")
    _net_args(p, cnt_mat=False)
    _data_args(p, threads_help="torch threads of each worker process (default: 1)")
    p.add_argument("--num-search", "--num_search", dest="num_search", type=int, default=5000,
                   help="candidates to score (default: 5000)")
    p.add_argument("--batch-size", type=int_range(1, 65536), default=256,
                   help="samples per scoring batch (kernel size; default: 256, the official)")
    p.add_argument("--batches", type=int, default=2, help="batches the score is averaged over (default: 2)")
    p.add_argument("--fresh-batches", action="store_true",
                   help="draw fresh augmented training batches for every candidate (the official search) "
                        "instead of one fixed set for all")
    p.add_argument("--no-score-dropout", action="store_true",
                   help="score with dropout off (the official search scores with it on)")
    p.add_argument("--sampler", default="official", choices=("official", "redraw"),
                   help="official: prune nodes cut off from node 0 or 3 (default); redraw: redraw invalid cells")
    p.add_argument("--celltype", default="backward", choices=("backward", "forward"),
                   help="backward: each node pair gets a forward or a backward edge (default); forward: forward only")
    p.add_argument("--objective", default="score", choices=("score", "hw"),
                   help="score: the spike-pattern score; hw: also the LoAS and SparTen-S cycles and energy of "
                        "each cell's spike layers (Pareto front, --max-cycles, --png)")
    p.add_argument("--max-cycles", type=int, default=None, help="with --objective hw: report the best cell "
                   "whose LoAS cycles fit this budget")
    p.add_argument("--png", default=None,
                   help="with --objective hw: plot of score vs LoAS cycles (default OUT/pareto.png; '' = none)")
    add_out(p, "reports/nas-search", "report directory (search.csv, search.json); scored cells are kept in "
                                     "OUT/store and a rerun scores only the missing ones")
    add_engine(p)
    add_seed(p, "seeds the candidates, their weights and the batches")
    p.add_argument("--top", type=int, default=10, help="ranked candidates to print")
    add_json(p)
    p.set_defaults(func=cmd_search)

    p = g.add_parser("train", help="train a SNASNet cell (SGD + cosine, resumable)")
    _net_args(p)
    _data_args(p, subset=True)
    add_training(p, epochs=300, lr=0.1, batch_size=64, lr_min_ratio=0.01, cutout=False)
    p.add_argument("--no-fc1-warmup", action="store_true",
                   help="skip the warm-up that scales fc1 so the classifier LIF fires at the start "
                        "(without it a narrow network's fc1 LIF is silent and training stays at chance)")
    add_out(p, what="checkpoint file to write", required=True)
    add_json(p)
    p.set_defaults(func=cmd_train, out_kind="file")

    p = g.add_parser("test", help="test accuracy of a trained SNASNet checkpoint")
    add_checkpoint(p)
    _data_args(p, default=None, subset=True)
    p.add_argument("--batch-size", type=int, default=256, help="evaluation batch size")
    add_json(p)
    p.set_defaults(func=cmd_test)

    p = g.add_parser("export", help="write a SNASNet's spike layers (backward-edge convs too) as a trace workload")
    add_checkpoint(p, required=False, help="trained SNASNet (or give --cnt-mat for an untrained one)")
    _cnt_mat_arg(p, False, " (the cell of an untrained network; give this or the checkpoint)")
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
