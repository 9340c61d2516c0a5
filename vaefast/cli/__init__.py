"""Command line: thin argument parsing over the Python API; user errors exit 2 in one line.

Heavy libraries are imported inside each command so ``vaefast --help`` is instant.
Options default to None and are passed on only when given, so each function's
signature is the one source of its defaults.
"""

from __future__ import annotations

import sys

from vaefast.cli.parsers import CHOICES, _choice, build_parser
from vaefast.errors import VaefastError

__all__ = ["CHOICES", "_choice", "build_parser", "main"]


# the extra each command needs whatever its options (options that need one check it
# where they are read: vaefast.extras.require)
NEEDS = {"train": "train", "export": "train", "demo": "train", "explore": "explore"}


INTERRUPTED = {
    "embed": "interrupted; the store keeps its finished chunks, run the same "
    "command again to resume"
}


RANGE_FLAGS = ("--input-range", "--output-range")


def _ranges_joined(argv: list[str]) -> list[str]:
    """``--input-range -1,1`` as ``--input-range=-1,1``: argparse would take ``-1,1`` for
    an option."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in RANGE_FLAGS and arg[:1] == "-" and arg[1:2].isdigit():
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``vaefast`` console script."""
    parser = build_parser()
    args = parser.parse_args(_ranges_joined(sys.argv[1:] if argv is None else argv))
    from vaefast.lifeline import Terminated, terminate_as_interrupt

    from vaefast.extras import extra_for, require

    try:
        if args.command in NEEDS:
            diffusers = getattr(args, "diffusers", None)
            require("diffusers" if diffusers else NEEDS[args.command], "this command")
        with terminate_as_interrupt():
            args.func(args)
    except VaefastError as e:
        print(f"vaefast {args.command}: error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:  # an optional part reached that no check above names
        extra = extra_for(e.name)
        if extra is None:
            raise
        print(
            f"vaefast {args.command}: error: needs {e.name}: pip install 'vaefast[{extra}]'",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (timeout, scancel, kubectl)
        print(
            f"vaefast {args.command}: "
            f"{INTERRUPTED.get(args.command, 'interrupted; nothing was written')}",
            file=sys.stderr,
        )
        return 128 + (15 if isinstance(e, Terminated) else 2)
    return 0
