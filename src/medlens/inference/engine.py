"""The inference engine shared by `medlens predict` and `medlens serve`: an artifact's logits
through ONNX Runtime (exported once and cached by the artifact's content hash, parity-checked
against torch at export), with torch eager as the fallback."""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from medlens.errors import ConfigError, MedlensError
from medlens.inference.artifact import Artifact
from medlens.inference.providers import Runtime, fp32_candidates, runtime_for
from medlens.models.forward import batched_logits, combined

log = logging.getLogger(__name__)

BACKENDS = ("auto", "onnx", "torch")
PRECISIONS = ("fp32", "bf16", "int8")


def artifact_digest(artifact: Artifact) -> str:
    """SHA-256 of model.json and every weights file: the cache key of its ONNX export."""
    digest = hashlib.sha256((artifact.folder / "model.json").read_bytes())
    for name in artifact.meta["members"]:
        digest.update((artifact.folder / name).read_bytes())
    return digest.hexdigest()


def input_shape(artifact: Artifact) -> tuple[int, ...]:
    size = artifact.meta.get("input_size")
    if not size:
        raise ConfigError("the artifact records no input size; re-export it with medlens train")
    return (artifact.in_channels, *map(int, size))


class Engine:
    """Logits (N, K) for preprocessed batches; ``backend`` "auto" uses ONNX Runtime when the
    export works and torch otherwise (and says which in ``backend_used``, and which ONNX Runtime
    provider in ``provider``). ``precision="int8"`` runs the artifact's quantized model
    (`medlens export --int8`) through ONNX Runtime, ``precision="bf16"`` the float32 graph on
    OpenVINO in bfloat16 (`medlens export --bf16` checks it first); both need ONNX Runtime.
    A float32 model runs on the ONNX Runtime ``provider`` named, or with "auto" on the fastest
    for it on this machine (:mod:`medlens.inference.autotune`)."""

    def __init__(
        self,
        artifact: Artifact,
        *,
        backend: str = "auto",
        cache_dir: str | Path | None = None,
        threads: int | None = None,
        precision: str = "fp32",
        provider: str = "auto",
    ):
        if backend not in BACKENDS:
            raise ConfigError(f"unknown backend {backend!r}; use one of {list(BACKENDS)}")
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown precision {precision!r}; use one of {list(PRECISIONS)}")
        if precision != "fp32" and backend == "torch":
            raise ConfigError(f"{precision} models run on ONNX Runtime; use --backend onnx or auto")
        if provider != "auto" and precision != "fp32":
            raise ConfigError(f"--provider applies to fp32; {precision} has its own provider")
        self.artifact = artifact
        self.tta = artifact.tta
        self._lock = threading.Lock()  # torch modules are not re-entrant under hooks
        self._model: torch.nn.Module | None = None
        self._session: Any = None
        self.backend_used = "torch"
        self.runtime = runtime_for(artifact.spatial_dims, precision=precision)
        if precision == "int8":
            from medlens.inference.quantize import int8_model

            self._session = self.runtime.session(str(int8_model(artifact)), threads)
            self.backend_used = "onnx-int8"
        elif precision == "bf16":
            from medlens.inference.bf16 import require_bf16_check

            require_bf16_check(artifact)
            self._session = self._onnx_session(cache_dir, threads, self.runtime)
            self.backend_used = "onnx-bf16"
        elif backend != "torch":
            # outside the fallback below: a provider that is named but missing is an error
            candidates = fp32_candidates(artifact.spatial_dims, provider)
            try:
                self.runtime, self._session = self._fastest(candidates, cache_dir, threads)
                self.backend_used = "onnx"
            except (MedlensError, ImportError, RuntimeError, OSError) as err:
                if backend == "onnx":
                    raise
                log.warning(
                    "ONNX Runtime unavailable for %s (%s); using torch", artifact.folder, err
                )

    def _cache(self, cache_dir: str | Path | None) -> tuple[Path, str]:
        folder = Path(cache_dir or self.artifact.folder.parent / ".onnx-cache")
        return folder, artifact_digest(self.artifact)[:24]

    def _fastest(
        self, candidates: list[Runtime], cache_dir: str | Path | None, threads: int | None
    ) -> tuple[Runtime, Any]:
        """The first of ``candidates`` with its session, or the fastest when there are several:
        timed on one input (with the artifact's test-time views) on the first load, then
        remembered in the cache for this machine and thread count."""
        if len(candidates) == 1:
            return candidates[0], self._onnx_session(cache_dir, threads, candidates[0])
        from medlens.inference import autotune

        folder, digest = self._cache(cache_dir)
        record, key = folder / f"{digest}.providers.json", autotune.machine_key(threads)
        names = [r.name for r in candidates]
        chosen = autotune.remembered(record, key, names)
        if chosen is not None:
            runtime = candidates[names.index(chosen)]
            return runtime, self._onnx_session(cache_dir, threads, runtime)
        sessions = [self._onnx_session(cache_dir, threads, candidates[0])]
        for runtime in candidates[1:]:
            try:
                sessions.append(self._onnx_session(cache_dir, threads, runtime))
            except (MedlensError, RuntimeError, OSError) as err:  # the default still serves
                log.warning("%s provider unavailable for this model (%s)", runtime.name, err)
                return candidates[0], sessions[0]
        shape = (1, *input_shape(self.artifact))
        x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
        calls = [
            lambda s=s: self.tta.run(lambda views: s.run(None, {"image": views})[0], x)
            for s in sessions
        ]
        best, medians = autotune.fastest(calls)
        autotune.remember(record, key, names[best], dict(zip(names, medians, strict=True)))
        return candidates[best], sessions[best]

    def _onnx_session(
        self, cache_dir: str | Path | None, threads: int | None, runtime: Runtime
    ) -> Any:
        from medlens.inference.onnx import export_onnx

        folder, digest = self._cache(cache_dir)
        # the two 3D graphs differ (plain Conv3d for OpenVINO, unrolled for the CPU provider)
        graph = ".conv3d" if self.artifact.spatial_dims == 3 and not runtime.unroll_3d else ""
        graph += ".embedding" if self.artifact.embeds else ""
        path = folder / f"{digest}{graph}.onnx"
        if not path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            report = export_onnx(
                self.artifact.members,
                input_shape(self.artifact),
                path,
                unroll_3d=runtime.unroll_3d,
                embedding=self.artifact.embeds,
            )
            log.info("exported %s (max |ORT - torch| = %.2g)", path, report.max_abs_diff)
        return runtime.session(str(path), threads)

    def warm_up(self) -> NDArray[np.float32]:
        """Two calls on one random input, so the first real request does not pay for the
        providers' first runs. The first call of a fresh engine took (medians of 5, 3-minute
        PneumoniaMNIST / AdrenalMNIST3D CompactNets with their 9 / 27 views, without / with):
        7.8 / 5.0 ms (2D, bf16 on OpenVINO; later calls 3.1), 56.7 / 44.8 ms (3D, fp32 on
        OpenVINO; later 44). One all-zero input warmed the 2D bf16 call little (14.2 / 12.5)."""
        shape = (1, *input_shape(self.artifact))
        x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
        self.logits(x)
        return self.logits(x)

    def _torch_model(self) -> torch.nn.Module:
        """The members as one torch module, built on first use (callers hold ``_lock``): a
        cached ONNX export never needs it."""
        if self._model is None:
            self._model = combined(self.artifact.members).eval()
        return self._model

    @property
    def provider(self) -> str:
        return "torch" if self._session is None else self.runtime.name

    def logits(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        return self.outputs(batch)[0]

    def outputs(
        self, batch: NDArray[np.float32]
    ) -> tuple[NDArray[np.float32], NDArray[np.float64] | None]:
        """Logits and, for an artifact that :attr:`~medlens.inference.artifact.Artifact.embeds`,
        the members' pooled features (None otherwise), both over the artifact's test-time views;
        one pass for both on ONNX Runtime."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self._session is None:
            if not self.artifact.embeds:
                return self.torch_logits(batch), None
            with self._lock:
                return self.artifact.outputs(batch)
        session = self._session
        found = self.tta.run_outputs(lambda views: session.run(None, {"image": views}), batch)
        embedding = found[1].astype(np.float64) if self.artifact.embeds and len(found) > 1 else None
        return found[0], embedding

    @torch.no_grad()
    def torch_logits(self, batch: NDArray[np.float32]) -> NDArray[np.float32]:
        """The same through torch (a parity reference)."""
        with self._lock:
            return batched_logits(self._torch_model(), batch, tta=self.tta)
