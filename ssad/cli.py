"""``ssad`` command line: data, train, evaluate, predict, study, promote."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import time
from pathlib import Path

__all__ = ["main"]

log = logging.getLogger("ssad")


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML config (nested or dotted keys)")
    from ssad.config import PRESETS

    p.add_argument("--preset", choices=sorted(PRESETS), help="apply a preset before --config/--set")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a dotted config key, e.g. --set train.phase2_epochs=5 (repeatable)",
    )


def cmd_data_synth(args: argparse.Namespace) -> int:
    from ssad.data.synthetic import generate

    tic = time.perf_counter()
    root = generate(
        args.out,
        classes=args.classes,
        seed=args.seed,
        size=args.size,
        n_train=args.n_train,
        n_test_good=args.n_test_good,
        n_test_per_defect=args.n_test_per_defect,
    )
    print(f"wrote synthetic MVTec-layout data set to {root} in {time.perf_counter() - tic:.1f}s")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from ssad.config import load_config
    from ssad.pipeline import train_class

    overrides = [f"data.root={args.data}", f"data.class_name={args.class_name}", *args.overrides]
    config = load_config(args.config, overrides=overrides, preset=args.preset)
    tic = time.perf_counter()

    def on_epoch(report, _checkpoint) -> None:
        val = " ".join(
            f"{k}={v:.3f}" for k, v in report.metrics.items() if k in ("image_auroc", "pixel_auroc")
        )
        print(
            f"  epoch {report.epoch:3d} phase {report.phase} loss {report.loss:.3f} "
            f"acc {report.accuracy:.3f} ({report.seconds:.1f}s) {val}",
            flush=True,
        )

    result = train_class(config, out_dir=args.out, on_epoch=on_epoch)
    minutes = (time.perf_counter() - tic) / 60
    _print_metrics(args.class_name, result["val"], result["test"])
    print(f"trained in {minutes:.1f} min; detector + artifacts in {args.out}")
    print(f"validation metrics only; test split: ssad evaluate {args.out} --split test")
    return 0


def _print_metrics(name: str, val: dict, test: dict | None) -> None:
    keys = ("image_auroc", "pixel_auroc", "aupro", "image_f1_max")
    print(f"{'class':<12} {'split':<5} " + " ".join(f"{k:>12}" for k in keys))
    for split, m in (("val", val), ("test", test)):
        if m:
            print(
                f"{name:<12} {split:<5} "
                + " ".join(f"{m.get(k, float('nan')):>12.3f}" for k in keys)
            )


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ssad.pipeline import evaluate_saved

    metrics = evaluate_saved(args.run_dir, split=args.split)
    print(json.dumps(metrics, indent=2))
    print(f"artifacts in {Path(args.run_dir) / args.split}")
    return 0


def collect_images(items: list[str]) -> list[Path]:
    """Files as given; folders expanded (sorted, recursively) to their image files."""
    from ssad.data.images import IMAGE_SUFFIXES

    out: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            out += sorted(
                f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
            )
        elif p.exists():
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return out


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from ssad.data.images import ImageError, read_image
    from ssad.plots import heatmap_overlays
    from ssad.runtimes import load_predictor

    det = load_predictor(_detector_folder(args.model, args.tracking_uri), args.backend)
    paths = collect_images(args.images)
    images, kept = [], []
    for p in paths:
        try:
            images.append(read_image(p, det.size))
            kept.append(p)
        except ImageError as exc:
            print(f"skipped: {exc}", file=sys.stderr)
    if not kept:
        print("no readable images to score", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tic = time.perf_counter()
    scores, maps = det.predict(np.stack(images))
    rate = len(kept) / (time.perf_counter() - tic)
    decisions = det.decide(scores) if det.threshold is not None else [None] * len(scores)
    with open(out / "scores.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "score", "threshold", "anomalous"])
        for p, s, d in zip(kept, scores, decisions):
            w.writerow(
                [
                    str(p),
                    f"{s:.6f}",
                    det.threshold if det.threshold is not None else "",
                    "" if d is None else int(d),
                ]
            )
    names = [_unique_name(p, i) for i, p in enumerate(kept)]
    heatmap_overlays(
        images,
        list(maps),
        [None] * len(images),
        out / "heatmaps",
        names=names,
        scores=[float(s) for s in scores],
        vmax=float(max(maps.max(), det.threshold or 0)),
    )
    print(
        f"scored {len(kept)} images ({rate:.1f} images/s) → {out / 'scores.csv'}, {out / 'heatmaps'}"
    )
    if len(kept) < len(paths):
        print(f"{len(paths) - len(kept)} file(s) skipped (see messages above)")
    return 0


def _detector_folder(source: str, tracking_uri: str | None) -> str:
    """A detector folder, or a models:/ or runs:/ URI downloaded to one by the MLflow adapter."""
    from ssad.detector import REGISTRY_PREFIXES

    if source.startswith(REGISTRY_PREFIXES):
        from ssad.study.tracking import download_detector

        return download_detector(source, tracking_uri=tracking_uri)
    return source


def cmd_export(args: argparse.Namespace) -> int:
    from ssad.detector import Detector
    from ssad.export import export_detector

    folder = _detector_folder(args.model, args.tracking_uri)
    out = export_detector(
        Detector.load(folder, device="cpu"),
        args.out,
        formats=tuple(args.format),
        bank_size=args.bank_size,
        source=args.model,
    )
    check = json.loads((out / "export.json").read_text())["check"]
    for fmt in args.format:
        print(f"{fmt}: max |score - torch's| {check[fmt]['max_abs_score']:.2g} on {check['images']} images")
    print(f"exported {args.model} → {out} (README.txt there says how to run it)")
    return 0


def cmd_study_run(args: argparse.Namespace) -> int:
    from ssad.config import parse_overrides
    from ssad.study.runner import preflight, run_study
    from ssad.study.spec import load_spec

    spec = load_spec(args.spec, overrides=parse_overrides(args.overrides))
    if args.dry_run:
        spec, _ = preflight(spec)
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
            f"data {spec.data_root}; mlflow {spec.tracking_uri} ({spec.experiment}); storage {spec.storage_path}"
        )
        print("dry run: spec, search space, data and tracking store are valid; nothing launched")
        return 0
    out = run_study(spec, resume=args.resume, new=args.new, ray_address=args.ray_address)
    _print_board(out["leaderboard"], spec.metric, spec.base.flat())
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


def _print_board(board, metric: str, base: dict) -> None:
    from ssad.study.report import readable

    cols = [
        "class",
        f"best_{metric}",
        "trials",
        "finished",
        "stopped",
        "failed",
        "compute_s",
        "best_config",
    ]
    # the best configuration as the searched keys that differ from the study's base config
    print(readable(board[cols], config_columns={"best_config": base}))


def _print_ablation(table, spec, metric: str | None) -> None:
    from ssad.study.ablation import format_table

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
    from ssad.study.report import Progress, readable
    from ssad.study.spec import load_spec

    spec = load_spec(args.spec, overrides=parse_overrides(args.overrides))
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
    print(readable(report, config_columns={"changed_from_base": None}))
    champions = [m for m in report["model"] if m]
    print("champions: " + ", ".join(champions) + f"  (tracking store {spec.tracking_uri})")
    print("score images: ssad predict models:/ssad-<class>@champion IMAGE_OR_DIR... --out DIR")
    if failed is not None:
        print(f"error: {failed}", file=sys.stderr)
        return 1
    return 0


def cmd_study_show(args: argparse.Namespace) -> int:
    from ssad.config import ConfigError
    from ssad.study.leaderboard import leaderboard
    from ssad.study.spec import load_spec
    from ssad.study.tracking import StudyTracker, check_tracking_uri

    spec = load_spec(args.spec)
    tracker = StudyTracker(check_tracking_uri(spec.tracking_uri), spec.experiment, spec.name)
    board, stats = leaderboard(tracker, spec)
    _print_board(board, spec.metric, spec.base.flat())
    if spec.kind == "ablation":
        from ssad.study.ablation import results_table

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
    from ssad.study.ablation import compare_studies, format_table
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


def _unique_name(path: Path, i: int) -> str:
    return f"{i:04d}_{path.stem}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ssad", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="data set tools").add_subparsers(
        dest="data_command", required=True
    )
    synth = data.add_parser("synth", help="generate the synthetic MVTec-layout data set")
    synth.add_argument("--out", required=True, type=Path)
    synth.add_argument("--classes", nargs="+")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--size", type=int, default=256)
    synth.add_argument("--n-train", type=int, default=60, help="good training images per class")
    synth.add_argument(
        "--n-test-good",
        type=int,
        default=60,
        help="good test images per class (validation + test halves: larger = less noisy)",
    )
    synth.add_argument(
        "--n-test-per-defect", type=int, default=30, help="test images per defect type"
    )
    synth.set_defaults(func=cmd_data_synth)

    train = sub.add_parser("train", help="train and evaluate one class model")
    train.add_argument("--data", required=True, type=Path, help="MVTec-layout data root")
    train.add_argument("--class", dest="class_name", required=True)
    train.add_argument("--out", required=True, type=Path, help="run folder to write")
    _add_config_args(train)
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="re-evaluate a saved run folder")
    ev.add_argument("run_dir", type=Path)
    ev.add_argument("--split", choices=["val", "test", "all"], default="test")
    ev.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="score images with a run folder or models:/ URI")
    pr.add_argument("model")
    pr.add_argument("images", nargs="+", help="image files or folders")
    pr.add_argument("--out", required=True, type=Path)
    pr.add_argument(
        "--tracking-uri",
        help="MLflow store for models:/ URIs (default: $MLFLOW_TRACKING_URI "
        "or sqlite:///runs/mlflow.db)",
    )
    pr.add_argument(
        "--backend",
        choices=["torch", "onnx", "openvino"],
        default="torch",
        help="torch: the detector itself (FAISS bank); onnx / openvino: its export "
        "(the folder's export/, written by ssad export or promotion)",
    )
    pr.set_defaults(func=cmd_predict)

    ex = sub.add_parser("export", help="a run folder or models:/ URI → ONNX / OpenVINO graph")
    ex.add_argument("model")
    ex.add_argument("--format", nargs="+", choices=["onnx", "openvino"], default=["onnx"])
    ex.add_argument("--out", required=True, type=Path, help="export folder to write")
    ex.add_argument(
        "--bank-size",
        type=int,
        help="keep a greedy coreset of this many bank vectors (required above 16,384)",
    )
    ex.add_argument("--tracking-uri", help="MLflow store for models:/ URIs")
    ex.set_defaults(func=cmd_export)

    prom = sub.add_parser("promote", help="best per-class configs → final models → MLflow registry")
    prom.add_argument("spec", type=Path)
    prom.add_argument(
        "--top-k", type=int, default=1, help="re-train the top-k configurations per class"
    )
    prom.add_argument("--seeds", type=int, default=1, help="seeds per re-trained configuration")
    prom.add_argument("--classes", nargs="+", help="promote only these classes")
    prom.add_argument("--ray-address", help="auto | HOST:PORT of a running Ray cluster")
    prom.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a dotted spec key",
    )
    prom.set_defaults(func=cmd_promote)

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
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a dotted spec key, e.g. --set num_samples=4 or data.root=/data/mvtec",
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


if __name__ == "__main__":
    sys.exit(main())
