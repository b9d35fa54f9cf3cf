"""Which lab recipe trains which detector family.

A recipe is a function that trains one family on a labelled set and writes a detector folder,
returning its manifest. Lab modules register theirs with ``@recipe("family")``; detector classes
know nothing of training. :mod:`worker.lab.train` imports every recipe module and is the one
place ``fakescan train`` asks for a family's recipe. A second recipe for a family raises.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, TypeVar

from fakescan.catalog import DuplicateName
from fakescan.errors import UsageError

if TYPE_CHECKING:
    from fakescan.settings import Settings
    from worker.lab.config import TrainConfig


class Recipe(Protocol):
    def __call__(self, data: str, out: Path, config: "TrainConfig", settings: "Settings", *, command: str = "",
                 name: str | None = None, progress: bool = True) -> dict[str, Any]: ...


R = TypeVar("R", bound=Callable[..., dict[str, Any]])
_RECIPES: dict[str, Callable[..., dict[str, Any]]] = {}


def recipe(family: str) -> Callable[[R], R]:
    """Register the decorated function as what trains ``family``."""
    def register(function: R) -> R:
        if family in _RECIPES and _RECIPES[family] is not function:
            raise DuplicateName(f"a training recipe for {family!r} is already registered: "
                                f"{_RECIPES[family].__module__}.{_RECIPES[family].__qualname__}")
        _RECIPES[family] = function
        return function

    return register


def recipe_for(family: str) -> Recipe:
    try:
        return _RECIPES[family]
    except KeyError:
        raise UsageError(f"family {family!r} is not trained with 'fakescan train'; "
                         f"trainable: {', '.join(trainable_families())}") from None


def trainable_families() -> list[str]:
    return sorted(_RECIPES)
