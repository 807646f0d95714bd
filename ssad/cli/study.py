"""Study commands: ``study run | show | sync | compare`` and ``promote``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from ssad.cli.args import add_set_arg

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the promote and study commands to ``sub``."""
    prom = sub.add_parser("promote", help="best per-class configs → final models → MLflow registry")
    prom.add_argument("spec", type=Path)
    prom.add_argument(
        "--top-k", type=int, default=1, help="re-train the top-k configurations per class"
    )
    prom.add_argument("--seeds", type=int, default=1, help="seeds per re-trained configuration")
    prom.add_argument("--classes", nargs="+", help="promote only these classes")
    prom.add_argument("--ray-address", help="auto | HOST:PORT of a running Ray cluster")
    add_set_arg(prom, "override a dotted spec key")
    prom.set_defaults(func=cmd_promote)
    _register_study(sub)


def _register_study(sub: argparse._SubParsersAction) -> None:
    study = sub.add_parser("study", help="hyperparameter / ablation studies").add_subparsers(
        dest="study_command", required=True
    )
    run = study.add_parser("run", help="run (or --resume) a study spec")
    run.add_argument("spec", type=Path)
    run.add_argument("--ray-address", help="auto | HOST:PORT of a running Ray cluster")
    run.add_argument("--resume", action="store_true", help="continue the study's newest launch")
    run.add_argument(
        "--new",
        action="store_true",
        help="start a new launch of an existing study (new parent run; old runs kept apart)",
    )
    run.add_argument("--dry-run", action="store_true", help="validate everything, launch nothing")
    add_set_arg(
        run, "override a dotted spec key, e.g. --set num_samples=4 or data.root=/data/mvtec"
    )
    run.set_defaults(func=cmd_study_run)
    show = study.add_parser(
        "show", help="per-class leaderboard of a study; an ablation's statistics table"
    )
    show.add_argument("spec", type=Path)
    show.add_argument("--metric", help="ablations: print this metric only (default: all)")
    show.set_defaults(func=cmd_study_show)
    sync = study.add_parser(
        "sync",
        help="log to MLflow what a study kept only in Tune's storage (its tracking store was "
        "away); logs nothing twice",
    )
    sync.add_argument("spec", type=Path)
    sync.set_defaults(func=cmd_study_sync)
    cmp = study.add_parser(
        "compare",
        help="compare two finished studies' best configurations (paired by class and seed)",
    )
    cmp.add_argument("spec_a", type=Path, help="the reference study (A)")
    cmp.add_argument("spec_b", type=Path, help="the study compared against it (B)")
    cmp.add_argument("--metric", default="val_image_auroc", help="default: val_image_auroc")
    cmp.set_defaults(func=cmd_study_compare)


def cmd_study_run(args: argparse.Namespace) -> int:
    from ssad.config import parse_overrides
    from ssad.study.spec import load_spec
    from ssad.study.tune.runner import preflight, run_study

    spec = load_spec(args.spec, overrides=parse_overrides(args.overrides))
    if not args.verbose:
        quiet_libraries()
    if args.dry_run:
        _print_dry_run(preflight(spec)[0])
        return 0
    out = run_study(spec, resume=args.resume, new=args.new, ray_address=args.ray_address)
    _print_board(out["leaderboard"], spec)
    if out["ablation"] is not None:
        _print_ablation(out["ablation"], spec, spec.metric)
    st = out["stats"]
    print(
        f"trials: {st['trials']} ({st['finished']} finished, {st['stopped']} stopped early, "
        f"{st['failed']} failed) in {st['wall_s'] / 60:.1f} min; parallel efficiency "
        f"{st['parallel_efficiency']:.2f}"
    )
    _print_ui_hint(out["tracking_uri"], out["experiment_id"])
    return 1 if out["errors"] else 0


def quiet_libraries() -> None:
    """Silence library INFO lines a user cannot act on: Optuna's "a new study created in memory"
    per class, MLflow's database set-up, Tune's "wrote the result files". Their warnings and
    errors still show; ``ssad -v`` keeps everything."""
    import optuna
    import ray.tune  # noqa: F401  (Ray and MLflow set their loggers up on import: quiet them after)

    import ssad.study.tracking  # noqa: F401  (the MLflow adapter imports MLflow)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in ("mlflow", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _print_dry_run(spec) -> None:
    """What a launch of ``spec`` would run: trials, searcher, space or variants, where it logs."""
    print(
        f"study {spec.name}: {len(spec.classes)} classes x {spec.trials_per_class()} trials "
        f"= {spec.total_trials()} trials, {spec.max_epochs} epochs max, searcher {spec.searcher}, "
        f"scheduler {spec.scheduler}, resources cpu={spec.cpu} gpu={spec.gpu}, "
        f"concurrency {spec.max_concurrent}"
    )
    if spec.kind == "ablation":
        print(f"  variants (baseline {spec.baseline}), {spec.seeds_per_config} seeds each:")
        for name, over in spec.variants.items():
            print(f"  {name:<20} {over or '(the base config)'}")
    else:
        for d in spec.space.dims:
            rng = d.choices if d.kind == "categorical" else (d.low, d.high)
            print(f"  {d.key:<34} {d.kind:<12} {rng}")
    print(
        f"data {spec.data_root}; mlflow {spec.tracking_uri} ({spec.experiment}); "
        f"storage {spec.storage_path}"
    )
    print("dry run: spec, search space, data and tracking store are valid; nothing launched")


def _print_board(board, spec) -> None:
    """The per-class leaderboard, at most 120 columns wide (the best configuration shown as the
    keys that differ from the base config, cut to fit); the full configurations go to a file."""
    from ssad.study.results.leaderboard import BOARD_COLUMNS, write_best_configs
    from ssad.study.results.report import readable

    cols = [c.format(metric=spec.metric) for c in BOARD_COLUMNS]
    print(readable(board[cols], config_columns={"best_config": spec.base.flat()}))
    path = write_best_configs(board, spec)
    print(f"best configurations in full: {path}")


def _print_ablation(table, spec, metric: str | None) -> None:
    from ssad.study.results.ablation import format_table

    for m in [metric] if metric else spec.metrics:
        print()
        print(format_table(table, metric=m, alpha=spec.alpha))


def _print_ui_hint(uri: str, experiment_id: str) -> None:
    from ssad.study.tracking import runs_table_url

    if uri.startswith("sqlite:"):
        print(
            f"MLflow UI: mlflow ui --backend-store-uri {uri} --port 5000  →  "
            f"{runs_table_url('http://127.0.0.1:5000', experiment_id)}"
        )
    else:
        print(f"MLflow UI: {runs_table_url(uri, experiment_id)}")


def cmd_promote(args: argparse.Namespace) -> int:
    from ssad.config import parse_overrides
    from ssad.study.promote import PromotionError, promote
    from ssad.study.results.report import Progress, promotion_text
    from ssad.study.spec import load_spec

    spec = load_spec(args.spec, overrides=parse_overrides(args.overrides))
    if not args.verbose:
        quiet_libraries()
    # MLflow's per-file download bars would break the one-line-per-stage progress
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    failed = None
    try:
        report = promote(
            spec,
            top_k=args.top_k,
            seeds=args.seeds,
            classes=args.classes,
            ray_address=args.ray_address,
            progress=Progress(),
        )
    except PromotionError as exc:  # the classes that did complete are registered
        report, failed = exc.report, exc
    print(promotion_text(report))
    champions = [m for m in report["model"] if m]
    print("champions: " + ", ".join(champions) + f"  (tracking store {spec.tracking_uri})")
    print("score images: ssad predict models:/ssad-<class>@champion IMAGE_OR_DIR... --out DIR")
    if failed is not None:
        print(f"error: {failed}", file=sys.stderr)
        return 1
    return 0


def cmd_study_show(args: argparse.Namespace) -> int:
    from ssad.config import ConfigError
    from ssad.study.results.leaderboard import leaderboard
    from ssad.study.spec import load_spec
    from ssad.study.tracking import StudyTracker, check_tracking_uri

    spec = load_spec(args.spec)
    tracker = StudyTracker(check_tracking_uri(spec.tracking_uri), spec.experiment, spec.name)
    board, stats = leaderboard(tracker, spec)
    _print_board(board, spec)
    if spec.kind == "ablation":
        from ssad.study.results.ablation import results_table

        if args.metric and args.metric not in spec.metrics:
            raise ConfigError(
                f"--metric {args.metric}: the ablation's metrics are {list(spec.metrics)}"
            )
        _print_ablation(results_table(tracker, spec), spec, args.metric)
    print(
        f"trials: {stats['trials']} ({stats['finished']} finished, {stats['stopped']} stopped early, "
        f"{stats['failed']} failed), {stats['trial_seconds'] / 60:.1f} trial-minutes"
    )
    _print_ui_hint(tracker.tracking_uri, tracker.experiment_id)
    return 0


def cmd_study_sync(args: argparse.Namespace) -> int:
    from ssad.study.spec import load_spec
    from ssad.study.sync import sync_study

    spec = load_spec(args.spec)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    report = sync_study(spec)
    print(report.line())
    return 0


def cmd_study_compare(args: argparse.Namespace) -> int:
    from ssad.study.results.ablation import compare_studies, format_table
    from ssad.study.spec import METRICS, SpecError, load_spec
    from ssad.study.tracking import StudyTracker, check_tracking_uri

    if args.metric not in METRICS:
        raise SpecError(f"--metric: choose from {list(METRICS)}, got {args.metric!r}")
    specs = [load_spec(p) for p in (args.spec_a, args.spec_b)]
    trackers = [
        StudyTracker(check_tracking_uri(s.tracking_uri), s.experiment, s.name) for s in specs
    ]
    table = compare_studies(trackers[0], specs[0], trackers[1], specs[1], metric=args.metric)
    print(
        f"B = {specs[1].name} against A = {specs[0].name}: each study's best configuration per "
        f"class (its own selection), finished runs re-used, paired by (class, seed)"
    )
    print(format_table(table, metric=args.metric))
    return 0
