"""Model URIs → local detector folders, without the detector core knowing who resolves them.

The core (:class:`ssad.detector.Detector`) loads folders. A layer that knows a model store
registers a resolver for its URI prefixes; the MLflow adapter (``ssad.study.tracking``) registers
``models:/`` and ``runs:/`` when it is imported (``ssad predict`` and the study layer import it).

Example:
    >>> from pathlib import Path
    >>> register(("demo:/",), lambda uri: Path("/models") / uri.removeprefix("demo:/"))
    >>> resolve_uri("demo:/bottle")
    PosixPath('/models/bottle')
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

__all__ = ["ResolveError", "register", "resolve_uri"]

Resolver = Callable[[str], Path]
_RESOLVERS: dict[str, Resolver] = {}


class ResolveError(FileNotFoundError):
    """No resolver is registered for a URI's prefix (the message says what to import)."""


def register(prefixes: tuple[str, ...], resolver: Resolver) -> None:
    """Resolve URIs starting with any of ``prefixes`` with ``resolver(uri) -> folder``."""
    for prefix in prefixes:
        _RESOLVERS[prefix] = resolver


def resolve_uri(uri: str) -> Path:
    """The local folder of a model URI, through the resolver registered for its prefix."""
    for prefix, resolver in _RESOLVERS.items():
        if uri.startswith(prefix):
            return Path(resolver(uri))
    raise ResolveError(
        f"{uri}: no resolver for this URI; for MLflow models:/ and runs:/ URIs import "
        "ssad.study.tracking first (it needs mlflow), or pass a detector folder"
    )
