"""Shared command-line options of `loas`: one spelling, one default and one help text per concept.

Every subcommand builds its options from the helpers here (workload, layer, sample(s), config,
energy, checkpoint, dataset, T, threads, seed, training flags, output path, --json), so a concept is
spelled the same everywhere. Values are checked where argparse reads them (``type=`` functions
below): a negative thread count or a seed beyond 2**32 is a usage error before any work starts.

Aliases: the workload and the checkpoint are accepted both as the positional argument and as
``--workload`` / ``--checkpoint`` (both spellings existed; giving both with different values is an
error). Help texts show the default: :class:`HelpFormatter` appends ``(default: X)`` to every
option whose help does not state it already.
"""

from __future__ import annotations

import argparse
import json
import sys

#: Datasets the models and nas commands read (models/data.py).
DATASETS = ("fashion-mnist", "cifar10", "cifar100")
#: RTL simulators the cosimulation drives (hw/cosim.py).
SIMULATORS = ("verilator", "icarus")
#: Timesteps of every network command by default: the T the LoAS build (sim/configs/loas.yaml) has.
DEFAULT_T = 4
#: The help text of each command group, owned here so that the module registering a group's first
#: command does not decide it.
GROUP_HELP = {
    "trace": "trace workloads: inspect, verify, import",
    "rtl": "RTL of the LoAS core: cosimulation, Verilog, synthesis estimate",
    "nas": "SNASNet: cell search without training, train, test, export to traces",
}
MAX_SEED = 2**32 - 1


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help unless the help already names its default."""

    def _get_help_string(self, action):
        h = action.help or ""
        d = action.default
        if "default" in h or d is None or d is False or d is argparse.SUPPRESS or not action.option_strings:
            return h
        if isinstance(action.default, (list, tuple)) and not action.default:
            return h
        return h + " (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """argparse.ArgumentParser with :class:`HelpFormatter`; subparsers inherit the class."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        """A usage error: one line on stderr (as every user error of loas), exit 2."""
        self.exit(2, f"loas: error: {self.prog}: {message} (usage: {self.prog} --help)\n")


# value types (argparse calls them; a ValueError/ArgumentTypeError is a usage error, exit 2) ------
def int_range(lo: int | None = None, hi: int | None = None, what: str = "an integer"):
    def conv(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            rng = f">= {lo}" if hi is None else f">= {lo} and <= {hi}" if lo is not None else f"<= {hi}"
            raise argparse.ArgumentTypeError(f"must be {rng}, got {v}")
        return v

    conv.__name__ = "int"
    return conv


def finite_float(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
                 hi_open: bool = False):
    import math

    def conv(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        bad_lo = lo is not None and (v <= lo if lo_open else v < lo)
        bad_hi = hi is not None and (v >= hi if hi_open else v > hi)
        if bad_lo or bad_hi:
            a = "(" if lo_open else "["
            b = ")" if hi_open else "]"
            raise argparse.ArgumentTypeError(f"must be in {a}{lo if lo is not None else '-inf'}, "
                                             f"{hi if hi is not None else 'inf'}{b}, got {v}")
        return v

    conv.__name__ = "float"
    return conv


non_negative = int_range(0)
positive = int_range(1)


# positional-or-option arguments ----------------------------------------------------------------
def _pos_or_opt(p, name: str, help: str, required: bool, metavar: str):
    p.add_argument(f"{name}_pos", nargs="?", default=None, metavar=metavar,
                   help=f"{help} (or --{name})")
    p.add_argument(f"--{name}", dest=name, default=None, metavar=metavar,
                   help=f"{help} (alias of the positional {metavar})")
    specs = list(p.get_default("_pos_or_opt") or [])
    specs.append((name, required))
    p.set_defaults(_pos_or_opt=specs, _parser=p)


def resolve(args) -> None:
    """Merge positional-or-option arguments after parsing (called by ``loas.cli.main``)."""
    for name, required in getattr(args, "_pos_or_opt", None) or []:
        pos, opt = getattr(args, f"{name}_pos"), getattr(args, name)
        if pos is not None and opt is not None and pos != opt:
            args._parser.error(f"{name} given twice ({pos!r} and --{name} {opt!r})")
        value = pos if pos is not None else opt
        if required and value is None:
            args._parser.error(f"the {name} is required (positional or --{name})")
        setattr(args, name, value)


# the shared options ------------------------------------------------------------------------------
def add_workload(p, required: bool = True, help: str = "a name under traces/ or a workload directory"):
    _pos_or_opt(p, "workload", help, required, "WORKLOAD")


def add_checkpoint(p, required: bool = True, help: str = "model checkpoint file"):
    _pos_or_opt(p, "checkpoint", help, required, "CHECKPOINT")


def add_layer(p, required: bool = False, help: str | None = None):
    p.add_argument("--layer", required=required,
                   help=help or ("layer name, e.g. conv3" if required else "only this layer (default: every layer)"))


def add_sample(p):
    p.add_argument("--sample", type=non_negative, default=0, help="sample index of the trace")


def add_samples(p, default: int, help: str = "test samples to export"):
    p.add_argument("--samples", type=positive, default=default, help=help)


def add_config(p):
    p.add_argument("--config", default="loas",
                   help="LoAS configuration: a name under sim/configs/ or a YAML path (default: loas)")


def add_energy(p):
    p.add_argument("--energy", default="energy",
                   help="energy constants: a name under sim/configs/ or a YAML path (default: energy)")


def add_dataset(p, default: str | None = "fashion-mnist", subset: bool = True):
    p.add_argument("--dataset", default=default, choices=DATASETS,
                   help=f"dataset (default: {default})" if default else "dataset (default: the checkpoint's)")
    p.add_argument("--data", default=None,
                   help="dataset directory (default for fashion-mnist: /usr/share/datasets/fashion-mnist; "
                        "CIFAR needs one)")
    if subset:
        p.add_argument("--test-subset", type=positive, default=None,
                       help="use the first N test samples (default: all)")


def add_T(p, help: str = "timesteps", default: int = DEFAULT_T, why: str = "the LoAS build's"):
    p.add_argument("--T", type=int_range(1, 16), default=default, help=f"{help} (default: {default}, {why})")


def add_n_mask(p, default: int | None = 0):
    p.add_argument("--n-mask", type=int, choices=(0, 1, 2), default=default,
                   help="mask neurons firing once (1) or up to twice (2); 0 = off"
                        + (" (default: the checkpoint's)" if default is None else ""))


def add_threads(p, help: str = "torch CPU threads (default: torch's)"):
    p.add_argument("--threads", type=positive, default=None, help=help)


def add_seed(p, help: str = "random seed"):
    p.add_argument("--seed", type=int_range(0, MAX_SEED), default=0, help=help)


def add_training(p, *, epochs: int = 10, lr: float = 0.1, batch_size: int = 128, lr_min_ratio: float = 0.0,
                 cutout: bool = True, prefix: str = ""):
    """SGD + cosine training flags (models/train.py TrainConfig); ``prefix`` adds the per-round
    overrides of ``loas prune`` (``--round-epochs``, ``--round-lr``) instead."""
    if prefix:
        p.add_argument(f"--{prefix}epochs", type=positive, default=None,
                       help=f"epochs of rounds >= 1 (default: --epochs)")
        p.add_argument(f"--{prefix}lr", type=finite_float(0, lo_open=True), default=None,
                       help="lr of rounds >= 1 (default: --lr)")
        p.add_argument(f"--{prefix}train-subset", type=positive, default=None,
                       help="training samples of rounds >= 1 (default: as round 0)")
        return
    p.add_argument("--epochs", type=positive, default=epochs, help="training epochs")
    p.add_argument("--lr", type=finite_float(0, lo_open=True), default=lr, help="initial learning rate")
    p.add_argument("--lr-min-ratio", type=finite_float(0, 1), default=lr_min_ratio,
                   help="the cosine schedule ends at lr * this")
    p.add_argument("--momentum", type=finite_float(0, 1), default=0.9, help="SGD momentum")
    p.add_argument("--weight-decay", type=finite_float(0), default=5e-4, help="SGD weight decay")
    p.add_argument("--batch-size", type=int_range(1, 65536), default=batch_size, help="training batch size")
    add_seed(p, "seeds initialisation, batch order and augmentation")
    p.add_argument("--train-subset", type=positive, default=None,
                   help="use the first N training samples (default: all)")
    p.add_argument("--pad", type=int_range(0, 64), default=None,
                   help="random-crop padding (default: 4 for CIFAR, 2 otherwise)")
    p.add_argument("--no-flip", action="store_true", help="no random horizontal flip")
    if cutout:
        p.add_argument("--cutout", type=int_range(0, 256), default=0, help="Cutout square side (0 = off)")


def add_out(p, default: str | None = None, what: str = "output directory", required: bool = False):
    p.add_argument("--out", default=default, required=required and default is None,
                   help=what + ("" if default is None else f" (default: {default})"))


def add_engine(p) -> None:
    """The Dask engine of sweeps, comparisons and searches (sim/dist.py): --scheduler, --workers,
    --no-progress."""
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run on the Dask cluster of this scheduler (e.g. tcp://10.0.0.5:8786; default: "
                        "$LOAS_SCHEDULER, else an embedded local cluster)")
    p.add_argument("--workers", "--jobs", dest="workers", type=positive, default=None,
                   help="worker processes of the embedded cluster (default: one per core)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_json(p) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")


def emit(args, obj, text) -> None:
    """The one output of a report command: ``obj`` as JSON with --json, else the human-readable
    ``text`` (a string, a list of lines, or a callable returning either, built only when needed)."""
    if getattr(args, "json", False):
        json.dump(obj, sys.stdout, indent=2)
        print()
        return
    if callable(text):
        text = text()
    if isinstance(text, (list, tuple)):
        text = "\n".join(text)
    print(text)
