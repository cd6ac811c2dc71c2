"""The `jaxsys` command: one subcommand group per system, plus `tour`.

Each system package provides `jaxsys/<system>/cli.py` with `register(subparsers)`, which adds its group
(e.g. `jaxsys mlp train`) and sets `func` on each leaf parser; `func(args) -> int | None`.
"""

import argparse
import importlib
import importlib.util
import sys

from jaxsys.errors import JaxsysError

SYSTEMS = ["mlp", "autodecoder", "gpt", "codec", "ginr"]


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one `jaxsys: error: <command>: <message>` line and exit 2
    (the same shape as every other error of the command); `--help` still prints the usage."""

    def error(self, message: str):
        where = self.prog.removeprefix("jaxsys").strip()
        print(f"jaxsys: error: {where + ': ' if where else ''}{message}", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="jaxsys", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="group", metavar="{tour," + ",".join(SYSTEMS) + "}")
    from jaxsys import tour

    tour.register(sub)
    for name in SYSTEMS:
        if importlib.util.find_spec(f"jaxsys.{name}.cli") is None:
            continue
        importlib.import_module(f"jaxsys.{name}.cli").register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        # a group without a subcommand: print that group's help
        parser.parse_args((argv or sys.argv[1:]) + ["--help"])
        return 2
    try:
        rc = func(args)
    except JaxsysError as e:
        print(f"jaxsys: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jaxsys: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
