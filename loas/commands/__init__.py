"""Subcommands of `loas`. Each module here defines `register(subparsers)`; cli.py discovers them.

Modules import heavy libraries (torch, amaranth, cocotb) inside their handlers, not at import time,
so that `loas --help` and the numpy-only commands start fast. Their options come from
:mod:`loas.options` (one spelling and default per concept); JSON goes out through :func:`emit`.
"""

from __future__ import annotations

from loas.options import GROUP_HELP, add_json, emit  # noqa: F401  (the commands' shared helpers)


def group(subparsers, name: str, help: str | None = None):
    """Return the sub-subparsers of command group `name`, creating the group once.

    Several modules may add commands to one group (e.g. `loas trace stats` and
    `loas trace import-prosperity`); the group's help text is :data:`loas.options.GROUP_HELP`'s
    (``help`` only for a group not listed there), whichever module registers first.
    """
    existing = subparsers.choices.get(name)
    if existing is None:
        text = GROUP_HELP.get(name, help)
        existing = subparsers.add_parser(name, help=text, description=text)
        existing.set_defaults(func=lambda args, p=existing: p.print_help() or 2)
        existing._loas_sub = existing.add_subparsers(title="commands", metavar="COMMAND")
    return existing._loas_sub
