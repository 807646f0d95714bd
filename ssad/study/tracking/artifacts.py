"""A run's artifacts: what of a trial's checkpoint goes to MLflow, and uploading it.

A trial writes its evaluation artifacts (ROC curves, heatmaps, t-SNE, the detector's
``config.yaml`` and ``detector.json``: :func:`ssad.evaluate.write_artifacts`) into its Tune
checkpoint; its run gets that checkpoint without what Tune keeps (the training state and the
saved model), plus a failed trial's ``error.txt`` (:func:`final_artifacts`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["TUNE_KEEPS", "RunArtifacts", "final_artifacts"]

# Files of a checkpoint that stay in Tune's storage only: the training state and the saved model.
TUNE_KEEPS = ("state.pt", "detector/model.pt", "detector/bank.npy", "detector/bank_positions.npy")


@contextmanager
def final_artifacts(checkpoint: Any, error: str | None) -> Iterator[Path | None]:
    """The folder of a closing trial's artifacts, or None: its last ``checkpoint`` (a Tune
    ``Checkpoint``, or None) without :data:`TUNE_KEEPS`; ``error`` as ``error.txt``."""
    with tempfile.TemporaryDirectory(prefix="ssad-art-") as tmp:
        folder = Path(tmp) / "artifacts"
        if checkpoint is not None:
            folder = Path(checkpoint.to_directory(str(folder)))
            for name in TUNE_KEEPS:
                (folder / name).unlink(missing_ok=True)
        if error is not None:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "error.txt").write_text(error)
        yield folder if folder.is_dir() else None


class RunArtifacts:
    """The artifact methods of a study tracker (a mixin: they use its ``client``)."""

    def artifact_files(self, run_id: str, path: str | None = None) -> dict[str, int | None]:
        """Every artifact file of a run (relative path -> size), folders walked."""
        out: dict[str, int | None] = {}
        for item in self.client.list_artifacts(run_id, path):
            if item.is_dir:
                out.update(self.artifact_files(run_id, item.path))
            else:
                out[item.path] = item.file_size
        return out

    def upload_missing(self, run_id: str, folder: Path, *, replace: bool = False) -> int:
        """Upload the files of ``folder`` a run lacks (or has with another size); returns how many.

        ``replace``: upload every file (a closing that replaces an earlier one).
        """
        have = {} if replace else self.artifact_files(run_id)
        count = 0
        for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
            rel = path.relative_to(folder)
            if have.get(rel.as_posix(), -1) == path.stat().st_size:
                continue
            parent = rel.parent.as_posix()
            self.client.log_artifact(run_id, str(path), None if parent == "." else parent)
            count += 1
        return count

    def log_artifacts(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        """Upload a file or a folder's contents (under ``artifact_path``) to a run."""
        if Path(path).is_dir():
            self.client.log_artifacts(run_id, str(path), artifact_path=artifact_path)
        else:
            self.client.log_artifact(run_id, str(path), artifact_path=artifact_path)
