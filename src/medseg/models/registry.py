"""Model registry: ``register_model`` decorates a builder, ``build_model(name, **config)`` calls it."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from medseg.errors import MedsegError


@dataclass(frozen=True)
class ModelEntry:
    """A registered builder and a one-line description."""

    name: str
    builder: Callable[..., nn.Module]
    description: str


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, description: str = "") -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering ``builder`` under ``name`` (names are unique)."""

    def deco(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        doc = description or (builder.__doc__ or "").strip().splitlines()[0]
        _REGISTRY[name] = ModelEntry(name, builder, doc)
        return builder

    return deco


def list_models() -> list[ModelEntry]:
    """All registered models, sorted by name."""
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def builder_options(name: str) -> set[str]:
    """Keyword options the builder of ``name`` accepts (e.g. to pass ``img_size`` only where it matters)."""
    if name not in _REGISTRY:
        raise MedsegError(f"unknown model {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return set(inspect.signature(_REGISTRY[name].builder).parameters)


def sized_options(name: str, img_size: int, options: dict[str, object] | None = None) -> dict[str, object]:
    """``options`` plus ``img_size`` when the model's builder has a fixed input size."""
    out = dict(options or {})
    if "img_size" in builder_options(name):
        out.setdefault("img_size", img_size)
    return out


def build_model(name: str, **config: object) -> nn.Module:
    """Build the model registered as ``name`` with keyword ``config`` (see each builder for its options).

    Raises:
        MedsegError: unknown name (the message lists the known ones) or an option the builder does not take.
    """
    if name not in _REGISTRY:
        raise MedsegError(f"unknown model {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    try:
        return _REGISTRY[name].builder(**config)
    except TypeError as exc:
        raise MedsegError(f"model {name!r}: {exc}") from exc
