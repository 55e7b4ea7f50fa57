"""Deterministic preprocessing steps on :class:`MedicalImage` and their serialisable pipeline.

Every step is a frozen dataclass registered by name, so a pipeline round-trips through JSON
(plans and cache keys are built from it) and two equal pipelines hash equally.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from medlens.errors import ConfigError
from medlens.io.image import MedicalImage
from medlens.registry import Registry

TRANSFORMS: Registry[type[Transform]] = Registry("transform")


class Transform:
    """A deterministic ``MedicalImage -> MedicalImage`` step (subclasses are frozen dataclasses)."""

    name: ClassVar[str] = ""

    def __call__(self, image: MedicalImage) -> MedicalImage:
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        """JSON-ready description: ``{"name": ..., **parameters}``."""
        params: dict[str, Any] = dataclasses.asdict(self) if dataclasses.is_dataclass(self) else {}
        return {"name": self.name, **params}


def register(name: str) -> Any:
    """Class decorator: register a transform under ``name`` (and set its ``name``)."""

    def decorator(cls: type[Transform]) -> type[Transform]:
        cls.name = name
        return TRANSFORMS.register(name)(cls)

    return decorator


def from_spec(spec: dict[str, Any]) -> Transform:
    """Rebuild a transform from :meth:`Transform.spec` output."""
    params = dict(spec)
    cls = TRANSFORMS.get(str(params.pop("name", "")))
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(params) - set(fields)
    if unknown:
        raise ConfigError(f"transform {cls.name!r} has no parameter(s) {sorted(unknown)}")
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
    return cls(**converted)


@dataclass(frozen=True)
class Pipeline:
    """An ordered list of transforms, itself a transform.

    Example:
        >>> from medlens.transforms import Window, Resize
        >>> pipe = Pipeline((Window(preset="lung"), Resize((64, 64))))
        >>> Pipeline.from_json(pipe.to_json()) == pipe
        True
    """

    steps: tuple[Transform, ...] = ()

    def __call__(self, image: MedicalImage) -> MedicalImage:
        for step in self.steps:
            image = step(image)
        return image

    def spec(self) -> list[dict[str, Any]]:
        return [step.spec() for step in self.steps]

    def to_json(self) -> str:
        return json.dumps(self.spec(), sort_keys=True)

    @classmethod
    def from_spec(cls, specs: Sequence[dict[str, Any]]) -> Pipeline:
        return cls(tuple(from_spec(s) for s in specs))

    @classmethod
    def from_json(cls, text: str) -> Pipeline:
        return cls.from_spec(json.loads(text))

    def digest(self) -> str:
        """Stable hash of the settings (part of cache keys)."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]
