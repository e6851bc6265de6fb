"""Backends and their registry.

Backends are discovered through the ``harness.backends`` entry-point group; the built-in
ones register there the same way a third-party package would::

    [project.entry-points."harness.backends"]
    my-backend = "my_package.backend:MyBackend"

A selector such as ``eager,compiled:bf16`` picks variants: each token is a prefix of variant
ids, matched segment by segment (``eager:bf16`` the bf16 eager variants, ``eager:bf16:sdpa``
one). A token's first segment names a backend or, when no backend has that name, a family:
``quantized`` stands for every backend of the ``quantized`` family. A token of that one
segment picks each backend's default variants (for ``eager``, all of them); a token with a
dtype or settings matches among all of its variants.
"""

from __future__ import annotations

import difflib
import logging
from functools import cache
from importlib.metadata import entry_points

from harness.backends.base import DTYPES, Backend, PreparedModel, Variant, VariantSkipped
from harness.cases import Case

__all__ = [
    "DTYPES",
    "Backend",
    "PreparedModel",
    "UnknownBackendError",
    "Variant",
    "VariantSkipped",
    "backends_named",
    "get_backend",
    "parse_selector",
    "load_backends",
    "register_backend",
    "select_variants",
    "unregister_backend",
]

ENTRY_POINT_GROUP = "harness.backends"
log = logging.getLogger(__name__)

_registered: dict[str, Backend] = {}


class UnknownBackendError(ValueError):
    """A backend selector that names no registered backend."""


def register_backend(backend: Backend) -> None:
    """Register a backend instance directly (tests and notebooks; packages use the entry point)."""
    _registered[backend.name] = backend


def unregister_backend(name: str) -> None:
    """Remove a backend that ``register_backend`` added."""
    _registered.pop(name, None)


@cache
def _entry_point_backends() -> dict[str, Backend]:
    found: dict[str, Backend] = {}
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        backend_class = entry_point.load()
        backend = backend_class()
        if backend.name != entry_point.name:
            log.warning("entry point %r loads backend named %r; using %r", entry_point.name, backend.name, backend.name)
        found[backend.name] = backend
    return found


def load_backends() -> dict[str, Backend]:
    """Return every registered backend by name."""
    return {**_entry_point_backends(), **_registered}


def get_backend(name: str) -> Backend:
    backends = load_backends()
    if name in backends:
        return backends[name]
    close = difflib.get_close_matches(name, list(backends), n=3, cutoff=0.5)
    hint = f"closest: {', '.join(close)}" if close else f"known backends: {', '.join(sorted(backends))}"
    raise UnknownBackendError(f"unknown backend {name!r}; {hint} (see 'harness list backends')")


def backends_named(head: str) -> list[Backend]:
    """Return the backend called ``head`` or, when none is, every backend of the family ``head``."""
    backends = load_backends()
    if head in backends:
        return [backends[head]]
    family = [backend for _, backend in sorted(backends.items()) if backend.family == head]
    if family:
        return family
    names = sorted({*backends, *(backend.family for backend in backends.values())})
    close = difflib.get_close_matches(head, names, n=3, cutoff=0.5)
    hint = f"closest: {', '.join(close)}" if close else f"known backends and families: {', '.join(names)}"
    raise UnknownBackendError(f"unknown backend {head!r}; {hint} (see 'harness list backends')")


def _matches(settings: list[str], variant: Variant) -> bool:
    """Return whether ``settings`` (a token's segments after the backend) prefix the variant's."""
    actual = variant.id.split(":")[1:]
    return len(settings) <= len(actual) and actual[: len(settings)] == settings


def parse_selector(selector: str | None) -> list[str]:
    """Split a backend selector into tokens, checking that each names a backend or a family."""
    tokens = [token.strip() for token in (selector or "eager").split(",") if token.strip()]
    if not tokens:
        raise UnknownBackendError(f"empty backend selector {selector!r}; name backends such as 'eager'")
    for token in tokens:
        backends_named(token.split(":")[0])
    return tokens


def select_variants(selector: str | None, case: Case, device: str) -> list[tuple[Backend, Variant]]:
    """Return the (backend, variant) pairs of ``case`` that the selector names, in selector order."""
    chosen: list[tuple[Backend, Variant]] = []
    for token in parse_selector(selector):
        head, *settings = token.split(":")
        for backend in backends_named(head):
            candidates = backend.variants(case, device) if settings else backend.default_variants(case, device)
            for variant in candidates:
                if _matches(settings, variant) and all(variant != seen for _, seen in chosen):
                    chosen.append((backend, variant))
    return chosen
