"""``ssad`` command line: data, train, evaluate, predict, study, promote.

One module per command group: :mod:`ssad.cli.model` (data, train, evaluate, predict),
:mod:`ssad.cli.deploy` (export), :mod:`ssad.cli.study` (promote, study), :mod:`ssad.cli.dashboard`; shared arguments in
:mod:`ssad.cli.args`.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ssad.cli import dashboard, deploy, model, study

__all__ = ["build_parser", "main"]

log = logging.getLogger("ssad")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ssad", description="``ssad`` command line: data, train, evaluate, predict, study, promote."
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    model.register(sub)
    deploy.register(sub)
    study.register(sub)
    dashboard.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ssad.config import ConfigError
    from ssad.data.images import ImageError
    from ssad.data.mvtec import DatasetError
    from ssad.detector import DetectorError

    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except (
        ConfigError,
        DatasetError,
        ImageError,
        DetectorError,
        FileNotFoundError,
        ConnectionError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
