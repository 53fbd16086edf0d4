"""The `loas` command line.

Exit codes: 0 success, 1 a check failed (e.g. RTL mismatch), 2 user error (one line on stderr,
no traceback). Set LOAS_DEBUG=1 to see tracebacks of user errors.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from loas.options import Parser, resolve
from sim.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    import loas.commands as commands

    parser = Parser(
        prog="loas",
        description="Simulator of the LoAS dual-sparse SNN accelerator, with RTL cosimulation.",
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"loas.commands.{info.name}")
        module.register(sub)
    return parser


def _check_outputs(args) -> None:
    """Refuse an output path that is a file, lies under a file or cannot be written, before any
    work: ``--out`` (a directory, or a file where the command sets ``out_kind="file"``) and
    ``--save`` (a file)."""
    from sim.atomic import check_output

    if getattr(args, "out", None) is not None:
        check_output(args.out, flag="--out", kind=getattr(args, "out_kind", "dir"))
    if getattr(args, "save", None) is not None:
        check_output(args.save, flag="--save", kind="file")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        resolve(args)
    except SystemExit as exc:  # --help (0) or a usage error (2, one line already printed)
        return exc.code if isinstance(exc.code, int) else 2
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        _check_outputs(args)
        rc = args.func(args)
    except UserError as exc:
        if os.environ.get("LOAS_DEBUG"):
            raise
        # one line, whatever a library's exception text embedded in the message looks like
        print("loas: error: " + " ".join(str(exc).split()), file=sys.stderr)
        return 2
    except MemoryError as exc:  # an input (or a size asked for) larger than this machine's memory
        if os.environ.get("LOAS_DEBUG"):
            raise
        what = " ".join(str(exc).split())
        print(f"loas: error: out of memory{': ' + what if what else ''} (the input or the sizes asked for "
              "need more memory than is available)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("loas: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `loas ... | head`: the reader left; not an error of ours. Silence the flush at exit too.
        sys.stdout = open(os.devnull, "w")
        return 0
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
