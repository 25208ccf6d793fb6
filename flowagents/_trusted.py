"""Build pydantic models from values that are already valid, without running validation.

The orchestrator creates a result and a handful of stream events on every turn from values it has
validated itself (or that are its own constants); validating them again is a large share of a turn's
cost. What comes from users (agent results built by hand, settings, platform payloads) is validated
as usual.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)

_new = object.__new__
# The setters of BaseModel's own slots, called directly: about twice as fast as `object.__setattr__`
# (a wrapper descriptor that re-packs its arguments on every call).
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__
_DEFAULTS: dict[type[BaseModel], tuple[dict[str, Any], tuple[tuple[str, Callable[[], Any]], ...]]] = {}


def _defaults(cls: type[BaseModel]) -> tuple[dict[str, Any], tuple[tuple[str, Callable[[], Any]], ...]]:
    plain: dict[str, Any] = {}
    factories: list[tuple[str, Callable[[], Any]]] = []
    for name, info in cls.model_fields.items():
        if info.default_factory is not None:
            factories.append((name, info.default_factory))  # type: ignore[arg-type]
        elif not info.is_required():
            plain[name] = info.default
    _DEFAULTS[cls] = (plain, tuple(factories))
    return _DEFAULTS[cls]


def trusted(cls: type[M], values: dict[str, Any]) -> M:
    """`cls(**values)` for values already of the fields' types (defaults filled in, nothing checked)."""
    spec = _DEFAULTS.get(cls)
    plain, factories = spec if spec is not None else _defaults(cls)
    fields = {**plain, **values}
    for name, factory in factories:
        if name not in fields:
            fields[name] = factory()
    model: M = _new(cls)
    _set_dict(model, fields)
    _set_fields_set(model, set(values))
    _set_extra(model, None)
    _set_private(model, None)
    return model
