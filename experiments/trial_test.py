"""The test split of a finished ablation's trials, read once, after the study chose nothing on it.

Every trial of an ablation saves its detector in its last Tune checkpoint
(``<storage>/<study>/<class>-<variant>-s<seed>/checkpoint_*/detector``); this evaluates each on its
class's test half (the half validation never saw) and writes, per variant and class, the test
image / pixel AUROC and AUPRO of every seed, with the trial's validation values and its time from
Tune's ``result.json``::

    python -m experiments.trial_test studies/pretrained_ablation.yaml
    python -m experiments.trial_test --table experiments/results/trial-test-pretrained_ablation.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ssad.pipeline import evaluate_saved
from ssad.study.spec import load_spec

RESULTS = Path(__file__).parent / "results"
KEYS = ("image_auroc", "pixel_auroc", "aupro")


def _last_result(trial_dir: Path) -> dict:
    lines = (trial_dir / "result.json").read_text().splitlines()
    return json.loads(lines[-1]) if lines else {}


def _detector(trial_dir: Path) -> Path | None:
    found = sorted(trial_dir.glob("checkpoint_*/detector"), key=lambda p: p.parent.name)
    return found[-1] if found else None


def run(spec_path: Path) -> dict:
    spec = load_spec(spec_path)
    root = spec.storage_path / spec.name
    rows = []
    for trial_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        folder = _detector(trial_dir)
        last = _last_result(trial_dir) if folder is not None else {}
        config = last.get("config", {})  # the trial's class, variant and seed, as Tune ran it
        if "variant" not in config:
            continue
        cls, variant, seed = config["class_name"], config["variant"], int(config["seed"])
        test = evaluate_saved(folder, split="test", artifacts=False)
        rows.append(
            {
                "class": cls,
                "variant": variant,
                "seed": seed,
                "test": {k: test[k] for k in KEYS},
                "val": {k: last.get(f"val_{k}") for k in KEYS},
                "trial_s": last.get("time_total_s"),
            }
        )
        print(
            f"{trial_dir.name}: test "
            + " ".join(f"{k} {test[k]:.3f}" for k in KEYS)
            + f" ({last.get('time_total_s', float('nan')):.0f} s)",
            flush=True,
        )
    return {"spec": str(spec_path), "baseline": spec.baseline, "runs": rows}


def table(results: dict) -> str:
    """Per class and variant: test metrics mean ± std over seeds, and the trial's seconds."""
    rows = results["runs"]
    lines = [
        "| class | variant | seeds | test image AUROC | test pixel AUROC | test AUPRO | trial s |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    keys = sorted({(r["class"], r["variant"]) for r in rows})
    for cls, variant in keys:
        sub = [r for r in rows if r["class"] == cls and r["variant"] == variant]
        cells = []
        for k in KEYS:
            v = np.array([r["test"][k] for r in sub])
            cells.append(f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f}")
        secs = np.mean([r["trial_s"] or np.nan for r in sub])
        lines.append(f"| {cls} | {variant} | {len(sub)} | {' | '.join(cells)} | {secs:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("spec", type=Path, nargs="?")
    p.add_argument("--table", type=Path, help="print the table of a results file and exit")
    args = p.parse_args(argv)
    if args.table:
        print(table(json.loads(args.table.read_text())))
        return 0
    if args.spec is None:
        p.error("a study spec, or --table FILE")
    results = run(args.spec)
    out = RESULTS / f"trial-test-{load_spec(args.spec).name}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
