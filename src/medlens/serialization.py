"""Pickle-free state files: tensors in safetensors, everything else as JSON in its header.

A training checkpoint (model, optimizer, scheduler, RNG and history) is a nested structure of
dicts, lists, numbers and tensors. ``save_state`` stores the tensors under generated keys and
the structure, with references to them, as JSON metadata of the same single file, written
atomically; ``load_state`` rebuilds it without ever unpickling.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from medlens._fs import atomic_path
from medlens.errors import ArtifactError

_TENSOR = "__tensor__"
_TUPLE = "__tuple__"
_INTKEYS = "__intkeys__"


def _flatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().cpu().contiguous()
        return {_TENSOR: key}
    if isinstance(obj, dict):
        if obj and all(isinstance(k, int) for k in obj):  # optimizer states are keyed by int
            return {_INTKEYS: [[k, _flatten(v, tensors)] for k, v in obj.items()]}
        return {str(k): _flatten(v, tensors) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return {_TUPLE: [_flatten(v, tensors) for v in obj]}
    if isinstance(obj, list):
        return [_flatten(v, tensors) for v in obj]
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in a state file")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if _TENSOR in obj:
            return tensors[obj[_TENSOR]]
        if _TUPLE in obj:
            return tuple(_unflatten(v, tensors) for v in obj[_TUPLE])
        if _INTKEYS in obj:
            return {int(k): _unflatten(v, tensors) for k, v in obj[_INTKEYS]}
        return {k: _unflatten(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def save_state(path: str | Path, state: dict[str, Any], *, kind: str) -> Path:
    """Write ``state`` to one safetensors file atomically; ``kind`` is checked on load."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _flatten(state, tensors)
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"medlens_kind": kind, "tree": json.dumps(tree)})
    return path


def load_state(path: str | Path, *, kind: str) -> dict[str, Any]:
    """Read a file written by :func:`save_state` (never unpickles)."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError("file not found", path=path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
        tensors = load_file(str(path))
        found = metadata.get("medlens_kind")
        tree = json.loads(metadata["tree"])
    except (SafetensorError, OSError, KeyError, ValueError) as err:
        raise ArtifactError(
            f"corrupt or foreign state file ({type(err).__name__}: {err})",
            path=path,
            fix="delete it and train again, or point to the right file",
        ) from None
    if found != kind:
        raise ArtifactError(f"this is a {found!r} file, expected {kind!r}", path=path)
    state: dict[str, Any] = _unflatten(tree, tensors)
    return state


def save_weights(path: str | Path, weights: dict[str, torch.Tensor], meta: dict[str, str]) -> Path:
    """Plain safetensors weights (readable by any safetensors tool), written atomically."""
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in weights.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError("weights file not found", path=path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ArtifactError(
            f"corrupt weights file ({err})", path=path, fix="re-export or re-train the model"
        ) from None
