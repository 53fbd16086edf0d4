"""One command line: every option has help with its default, shared spellings and defaults, aliases,
usage errors as one line (in process: loas.cli.main)."""

import argparse
import inspect
import json
import re
from pathlib import Path

import pytest

from loas.cli import build_parser, main
from loas.options import DEFAULT_T, GROUP_HELP
from sim.synthetic import write_random_workload
from sim.trace import Geometry

ROOT = Path(__file__).resolve().parent.parent


def _walk(p, path):
    yield path, p
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, sp in a.choices.items():
                yield from _walk(sp, path + [name])


COMMANDS = list(_walk(build_parser(), ["loas"]))


def _options(p):
    return [a for a in p._actions if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]


def test_every_option_of_every_command_has_help_showing_its_default():
    assert len(COMMANDS) > 20
    for path, p in COMMANDS:
        fmt = p._get_formatter()
        for a in _options(p):
            h = fmt._expand_help(a) if a.help else ""
            where = f"{' '.join(path)} {a.option_strings or a.dest}"
            assert h.strip(), f"{where}: no help"
            if a.option_strings and a.default not in (None, False, []):
                assert "default" in h, f"{where}: help does not show the default {a.default!r}"
        assert p.format_help()  # renders (no bad % in a help text)


def test_shared_options_have_one_spelling_and_default():
    seen = {}
    for path, p in COMMANDS:
        for a in _options(p):
            for opt in a.option_strings:
                if opt in ("--T", "--sample", "--threads", "--seed", "--dataset", "--config", "--simulator"):
                    if opt == "--T" and path[1] == "nas":  # SNASNet's own T
                        opt = "--T (nas)"
                    seen.setdefault(opt, set()).add(repr(a.default) if opt not in ("--seed", "--dataset") else
                                                    repr(a.choices))
    assert seen["--T"] == {repr(DEFAULT_T)}
    from loas.commands.nas import SNASNET_T
    from models.snasnet import build_snasnet

    assert seen["--T (nas)"] == {repr(SNASNET_T)} == {repr(inspect.signature(build_snasnet).parameters["T"].default)}
    assert seen["--sample"] == {"0"} and seen["--threads"] == {"None"} and seen["--config"] == {"'loas'"}
    assert len(seen["--dataset"]) == 1 and "cifar10" in next(iter(seen["--dataset"]))
    assert seen["--simulator"] == {"'verilator'"}
    # training flags: one definition (the same set in loas train and loas nas train, but cutout)
    def flags(*cmd):
        p = dict((tuple(k[1:]), v) for k, v in COMMANDS)[cmd]
        return {o for a in _options(p) for o in a.option_strings}
    train = {"--epochs", "--lr", "--lr-min-ratio", "--momentum", "--weight-decay", "--batch-size", "--seed",
             "--train-subset", "--pad", "--no-flip"}
    assert train <= flags("train") and train <= flags("nas", "train") and train <= flags("finetune")


def test_group_help_is_the_groups_own():
    top = dict((tuple(k[1:]), v) for k, v in COMMANDS)
    for name, text in GROUP_HELP.items():
        assert top[(name,)].description == text


def test_report_commands_emit_json_through_one_function():
    for f in (ROOT / "loas" / "commands").glob("*.py"):
        src = f.read_text()
        assert not re.search(r"json\.dumps?\(", src), f"{f.name}: JSON printed outside emit()"


@pytest.fixture(scope="module")
def wl(tmp_path_factory):
    return write_random_workload(tmp_path_factory.mktemp("w") / "opt", {"conv2": Geometry(4, 4, 4, 3, 1, 1, 8)},
                                 T=4, seed=1)


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_workload_and_checkpoint_aliases(wl, capsys):
    rc, a, _ = run(capsys, "trace", "stats", wl, "--json")
    rc2, b, _ = run(capsys, "trace", "stats", "--workload", wl, "--json")
    assert rc == rc2 == 0 and json.loads(a) == json.loads(b)
    rc, _, err = run(capsys, "trace", "stats", wl, "--workload", "other")
    assert rc == 2 and "workload given twice" in err and err.count("\n") == 1
    rc, _, err = run(capsys, "profile", "--checkpoint", "no/such.pt")
    assert rc == 2 and "no/such.pt: checkpoint not found" in err
    rc, _, err = run(capsys, "export", "no/such.pt", "--out", "x")
    assert rc == 2 and "no/such.pt: checkpoint not found" in err


@pytest.mark.parametrize("argv, words", [
    (["train", "--threads", "-1", "--out", "m.pt"], "argument --threads: must be >= 1, got -1"),
    (["train", "--seed", str(10**30), "--out", "m.pt"], "argument --seed: must be >= 0 and <= 4294967295"),
    (["nas", "search", "--seed", "-3"], "argument --seed: must be >= 0 and <= 4294967295"),
    (["rtl", "sim", "w", "--layer", "c", "--simulator", "vcs"], "invalid choice: 'vcs'"),
    (["train", "--dataset", "mnist", "--out", "m.pt"], "invalid choice: 'mnist'"),
    (["train", "--lr", "nan", "--out", "m.pt"], "argument --lr: must be a finite number"),
    (["golden", "--layer", "c"], "the workload is required"),
    (["sim", "w", "--sample", "-1"], "argument --sample: must be >= 0"),
])
def test_usage_errors_are_one_line(capsys, argv, words):
    rc, out, err = run(capsys, *argv)
    assert rc == 2 and err.startswith("loas: error: ") and err.count("\n") == 1, err
    assert words in err and "usage" in err


def test_help_exits_0(capsys):
    assert run(capsys, "sim", "--help")[0] == 0


def test_out_of_memory_is_one_line_exit_2(monkeypatch, capsys):
    import loas.commands.nas as nas

    def boom(args):
        raise MemoryError("Unable to allocate 8.00 EiB for an array\nwith shape (1, 2)")

    monkeypatch.setattr(nas, "cmd_test", boom)
    assert main(["nas", "test", "--checkpoint", "x.pt"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("loas: error: out of memory: Unable to allocate 8.00 EiB")
