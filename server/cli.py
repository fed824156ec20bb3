"""The ``fathom`` command line: demo, simulate, prepare, serve."""

from __future__ import annotations

import argparse
import sys


def _cmd_demo(args: argparse.Namespace) -> int:
    """Generate the built-in synthetic log, prepare it and serve it (as far as exists)."""
    import engine

    engine.warmup()
    print("fathom demo: engine kernels compiled.")
    print(
        "fathom demo: the synthetic rig, `fathom prepare` and `fathom serve` are not built yet "
        "(issues 2, 8, 9); nothing more to run.",
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fathom", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="synthetic log → prepared scene → served on 127.0.0.1:8000")
    demo.add_argument("--workdir", default="fathom-demo", help="where the demo log and scene go")
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
