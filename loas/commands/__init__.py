"""Subcommands of `loas`. Each module here defines `register(subparsers)`; cli.py discovers them.

Modules import heavy libraries (torch, amaranth, cocotb) inside their handlers, not at import time,
so that `loas --help` and the numpy-only commands start fast.
"""

from __future__ import annotations

import argparse
import json
import sys


def group(subparsers, name: str, help: str):
    """Return the sub-subparsers of command group `name`, creating the group once.

    Several modules may add commands to one group (e.g. `loas trace stats` and
    `loas trace import-prosperity`).
    """
    existing = subparsers.choices.get(name)
    if existing is None:
        existing = subparsers.add_parser(name, help=help, description=help)
        existing.set_defaults(func=lambda args, p=existing: p.print_help() or 2)
        existing._loas_sub = existing.add_subparsers(title="commands", metavar="COMMAND")
    return existing._loas_sub


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")


def emit(args, obj, text: str) -> None:
    """Print `obj` as JSON when --json was given, else the human-readable `text`."""
    if getattr(args, "json", False):
        json.dump(obj, sys.stdout, indent=2)
        print()
    else:
        print(text)
