"""What a `medlens serve` process is allowed to do, and its API tokens."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medlens.errors import ConfigError
from medlens.serving.uploads import Limits

TOKEN_ENV = "MEDLENS_API_TOKENS"
#: how `medlens serve --workers N` hands its settings to the worker processes (never the tokens)
CONFIG_ENV = "MEDLENS_SERVE_CONFIG"
MIN_TOKEN_LENGTH = 16
NEW_TOKEN_HINT = "make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"


@dataclass(frozen=True)
class ServeSettings:
    """Models, tokens, limits and batching of one service."""

    model_dirs: tuple[Path, ...]
    tokens: tuple[str, ...]
    allowed_dirs: tuple[Path, ...] = ()
    limits: Limits = field(default_factory=Limits)
    max_batch: int = 32
    batch_window_ms: float = 0.0
    max_queue: int = 64
    backend: str = "auto"
    precision: str = "fp32"
    #: fp32's ONNX Runtime provider ("auto": the fastest, timed; see inference.autotune)
    provider: str = "auto"
    #: ONNX Runtime threads per model (None: one per core)
    threads: int | None = None
    cors_origins: tuple[str, ...] = ()
    audit_log: Path | None = None
    onnx_cache: Path | None = None
    explain_method: str = "gradcam"
    #: run one explanation in the background at start-up (the first request's cost otherwise)
    warm_explanations: bool = True
    #: a folder the worker processes of one service share their metrics through
    metrics_dir: Path | None = None

    def to_config(self, token_file: Path | None) -> str:
        """JSON for the worker processes: everything but the tokens, which each worker reads
        again from ``token_file`` (or the environment) so they are never copied around."""
        data = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "tokens"
        }
        data["limits"] = dataclasses.asdict(self.limits)
        data["token_file"] = token_file
        return json.dumps(data, default=str)

    @classmethod
    def from_config(cls, text: str, environ: Mapping[str, str] = os.environ) -> ServeSettings:
        data: dict[str, Any] = json.loads(text)
        token_file = data.pop("token_file")
        for key in ("audit_log", "onnx_cache", "metrics_dir"):
            data[key] = Path(data[key]) if data[key] is not None else None
        data["model_dirs"] = tuple(Path(p) for p in data["model_dirs"])
        data["allowed_dirs"] = tuple(Path(p) for p in data["allowed_dirs"])
        data["cors_origins"] = tuple(data["cors_origins"])
        data["limits"] = Limits(**data["limits"])
        data["tokens"] = load_tokens(Path(token_file) if token_file else None, environ)
        return cls(**data)


def load_tokens(
    token_file: Path | None, environ: Mapping[str, str] = os.environ
) -> tuple[str, ...]:
    """Tokens from ``token_file`` (one per line, ``#`` comments) or ``MEDLENS_API_TOKENS``
    (comma or whitespace separated). A service without tokens, or with short ones, is refused."""
    if token_file is not None:
        try:
            lines = token_file.read_text().splitlines()
        except OSError as err:
            raise ConfigError(
                f"cannot read the token file ({err.strerror})", path=token_file
            ) from None
        tokens = [t.strip() for t in lines if t.strip() and not t.strip().startswith("#")]
        source = str(token_file)
    else:
        tokens = environ.get(TOKEN_ENV, "").replace(",", " ").split()
        source = TOKEN_ENV
    if not tokens:
        raise ConfigError(
            f"no API tokens in {source}",
            fix=f"give --token-file FILE (one token per line) or set {TOKEN_ENV}; {NEW_TOKEN_HINT}",
        )
    short = [k for k, t in enumerate(tokens, 1) if len(t) < MIN_TOKEN_LENGTH]
    if short:
        raise ConfigError(
            f"token(s) {short} in {source} are shorter than {MIN_TOKEN_LENGTH} characters",
            fix=NEW_TOKEN_HINT,
        )
    return tuple(tokens)


def token_id(token: str) -> str:
    """What logs say instead of a token: a short digest that cannot be turned back into it."""
    return "tok-" + hashlib.sha256(token.encode()).hexdigest()[:10]
