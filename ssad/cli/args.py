"""Arguments several commands share: the config sources and ``--set`` overrides."""

from __future__ import annotations

import argparse
from pathlib import Path

from ssad.presets import PRESETS

__all__ = ["add_config_args", "add_set_arg"]


def add_config_args(p: argparse.ArgumentParser) -> None:
    """``--config``, ``--preset`` (the presets registry's names) and ``--set`` for a class config."""
    p.add_argument("--config", type=Path, help="YAML config (nested or dotted keys)")
    p.add_argument("--preset", choices=sorted(PRESETS), help="apply a preset before --config/--set")
    add_set_arg(
        p, "override a dotted config key, e.g. --set train.phase2_epochs=5 (repeatable)"
    )


def add_set_arg(p: argparse.ArgumentParser, help: str) -> None:
    """A repeatable ``--set KEY=VALUE`` collected into ``args.overrides``."""
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help
    )
