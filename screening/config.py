"""Helpers shared by the frozen configuration dataclasses (docs/architecture.md, Defaults).

Each stage declares ``@dataclass(frozen=True, kw_only=True)`` and inherits :class:`FrozenConfig`
for ``to_dict`` / ``from_dict`` / ``digest``. Validation lives in each class's ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import types
import typing
from typing import Any, Self

from screening.errors import ConfigError

__all__ = ["FrozenConfig", "pipeline_id", "require"]


def require(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)


def _plain(value: Any) -> Any:
    if isinstance(value, FrozenConfig):
        return value.to_dict()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _coerce(tp: Any, value: Any) -> Any:
    """Turn plain JSON-like ``value`` back into the annotated type ``tp``."""
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value)
            except (TypeError, ValueError):
                continue
        return value
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v) for v in value)
        return tuple(_coerce(a, v) for a, v in zip(args, value, strict=True))
    if isinstance(tp, type) and issubclass(tp, FrozenConfig):
        return tp.from_dict(value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return tp(value)
    if tp is float and isinstance(value, int):
        return float(value)
    return value


class FrozenConfig:
    """Mixin for frozen keyword-only config dataclasses: dict round trip and a stable digest."""

    def to_dict(self) -> dict[str, Any]:
        assert dataclasses.is_dataclass(self)
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        assert dataclasses.is_dataclass(cls)
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(
                f"{cls.__name__} got unknown field(s) {unknown}; expected some of {sorted(names)}"
            )
        kwargs = {k: _coerce(hints[k], v) for k, v in data.items()}
        return cls(**kwargs)

    def digest(self) -> str:
        """sha256 of the canonical JSON form: equal configs give equal digests."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def pipeline_id(
    *,
    segmenter: str,
    model_id: str | None,
    configs: dict[str, FrozenConfig],
    engine_version: str,
    extra: dict[str, str] | None = None,
) -> str:
    """Identity of a result (docs/data-contracts.md): sha256 of the segmenter, the weights'
    sha256, every stage's configuration and the engine's major version. Equal inputs give equal
    ids, so a re-run of the same pipeline finds its earlier rows. ``extra`` adds further identities
    (e.g. the cascade's coarse weights); it is left out of the hash when empty, so ids made
    without it stay the same."""
    payload: dict[str, Any] = {
        "segmenter": segmenter,
        "model_id": model_id,
        "configs": {name: cfg.to_dict() for name, cfg in sorted(configs.items())},
        "engine_major": engine_version.split(".")[0],
    }
    if extra:
        payload["extra"] = dict(sorted(extra.items()))
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
