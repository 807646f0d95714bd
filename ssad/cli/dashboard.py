"""Dashboard commands: ``dashboard render``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the dashboard command to ``sub``."""
    dash = sub.add_parser("dashboard", help="study dashboards").add_subparsers(
        dest="dashboard_command", required=True
    )
    dash_render = dash.add_parser(
        "render", help="render a study's dashboards from its MLflow records (and log them)"
    )
    dash_render.add_argument("spec", type=Path)
    dash_render.add_argument(
        "--dashboard",
        action="append",
        type=Path,
        metavar="FILE",
        help="dashboard YAML (repeatable; default: dashboards/ablation.yaml for an ablation, "
        "else dashboards/study.yaml)",
    )
    dash_render.add_argument(
        "--out", type=Path, help="folder for the HTML files (default: runs/dashboards/<study>/)"
    )
    dash_render.add_argument(
        "--no-log", action="store_true", help="do not log them to the study's parent run"
    )
    dash_render.set_defaults(func=cmd_dashboard_render)


def cmd_dashboard_render(args: argparse.Namespace) -> int:
    from ssad.study.dashboard import (
        collect,
        dashboard_for,
        load_dashboard,
        publish,
        render,
        study_parent,
    )
    from ssad.study.spec import load_spec
    from ssad.study.tracking import StudyTracker, check_tracking_uri

    spec = load_spec(args.spec)
    try:  # a bad dashboard file, no records of the study: one line, no traceback
        dashboards = [load_dashboard(p) for p in args.dashboard or [dashboard_for(spec)]]
        tracker = StudyTracker(check_tracking_uri(spec.tracking_uri), spec.experiment, spec.name)
        parent = study_parent(tracker)
        out = args.out or Path("runs") / "dashboards" / spec.name
        for dash in dashboards:
            path = render(dash, collect(tracker, spec, dash), out / f"{dash.name}.html")
            if not args.no_log:
                logged = publish(tracker, parent, path, dash.source)
                print(f"{path}  (logged to run {parent} as {logged})")
            else:
                print(path)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
