"""``medlens serve``: predictions and heatmaps over HTTP, with a web viewer at ``/``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medlens.cli.common import cache_dir, console
from medlens.errors import ConfigError

#: seconds a worker may leave uvicorn's liveness ping unanswered before it is restarted
WORKER_HEALTHCHECK_S = 120


def serve_command(
    model_dirs: Annotated[list[Path], typer.Argument(help="Model folders (RUN_DIR/model).")],
    host: Annotated[str, typer.Option(help="Address to bind (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    token_file: Annotated[
        Path | None,
        typer.Option(help="API tokens, one per line (else MEDLENS_API_TOKENS)."),
    ] = None,
    allow_dir: Annotated[
        list[Path] | None,
        typer.Option("--allow-dir", help="A folder clients may name by path (repeat)."),
    ] = None,
    backend: Annotated[
        str, typer.Option(help="auto (ONNX Runtime, else torch), onnx or torch.")
    ] = "auto",
    precision: Annotated[
        str,
        typer.Option(
            help="fp32; bf16 or int8 once `medlens export --bf16|--int8` has checked them."
        ),
    ] = "fp32",
    provider: Annotated[
        str,
        typer.Option(
            help="fp32's ONNX Runtime provider: auto (the fastest for the model, timed on "
            "first load and remembered), cpu, openvino or cuda."
        ),
    ] = "auto",
    max_batch: Annotated[int, typer.Option(help="Largest dynamic batch.")] = 32,
    batch_window_ms: Annotated[
        float,
        typer.Option(
            help="Extra wait for a fuller batch (0: a batch is whatever queued meanwhile)."
        ),
    ] = 0.0,
    max_queue: Annotated[int, typer.Option(help="Waiting images per model before 503.")] = 64,
    max_upload_mb: Annotated[float, typer.Option(help="Largest upload in MiB.")] = 256,
    max_megapixels: Annotated[
        float, typer.Option(help="Largest decoded image (millions of values).")
    ] = 128,
    cors_origin: Annotated[
        list[str] | None, typer.Option(help="Allow browser calls from this origin (repeat).")
    ] = None,
    audit_log: Annotated[
        Path | None, typer.Option(help="Append the audit log here (JSON lines; default: stderr).")
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            help="Server processes sharing the port (each loads the models and batches its own "
            "requests); more than one pays off for small models, whose per-request Python work "
            "is the bound."
        ),
    ] = 1,
) -> None:
    """Serve models: POST /v1/models/NAME/predict|explain, GET /v1/models, /health, /ready,
    /metrics, and the web viewer at /."""
    import dataclasses
    import os
    import shutil
    import tempfile

    import uvicorn

    from medlens.serving.app import create_app
    from medlens.serving.settings import CONFIG_ENV, ServeSettings, load_tokens
    from medlens.serving.telemetry import audit_to_stderr
    from medlens.serving.uploads import Limits
    from medlens.serving.workers import run_workers

    if max_batch < 1 or max_queue < 1 or batch_window_ms < 0 or workers < 1:
        raise ConfigError(
            "--max-batch, --max-queue and --workers must be >= 1, --batch-window-ms >= 0"
        )
    for folder in allow_dir or []:
        if not folder.is_dir():
            raise ConfigError("--allow-dir is not a folder", path=folder)
    settings = ServeSettings(
        model_dirs=tuple(model_dirs),
        tokens=load_tokens(token_file),
        allowed_dirs=tuple(allow_dir or ()),
        limits=Limits(
            max_bytes=int(max_upload_mb * 2**20), max_pixels=int(max_megapixels * 1_000_000)
        ),
        max_batch=max_batch,
        batch_window_ms=batch_window_ms,
        max_queue=max_queue,
        backend=backend,
        precision=precision,
        provider=provider,
        cors_origins=tuple(cors_origin or ()),
        audit_log=audit_log,
        onnx_cache=cache_dir() / "onnx",
    )
    if audit_log is None:
        audit_to_stderr()
    app = create_app(settings)  # loads (and exports) every model once: errors show here
    for name, service in app.state.models.items():
        console.print(
            f"model [b]{name}[/b] v{service.version} ({service.engine.backend_used}, {service.engine.provider})"
        )
    console.print(
        f"serving at http://{host}:{port}/ (viewer)"
        + (f" with {workers} worker processes" if workers > 1 else "")
        + " - Ctrl+C stops"
    )
    if workers == 1:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
        return
    for service in app.state.models.values():
        service.close()
    del app
    shared = Path(tempfile.mkdtemp(prefix="medlens-metrics-"))
    # the cores are split between the workers: N workers x all-core thread pools would fight
    threads = max(1, (os.cpu_count() or 1) // workers)
    os.environ[CONFIG_ENV] = dataclasses.replace(
        settings, metrics_dir=shared, threads=threads
    ).to_config(token_file)
    config = uvicorn.Config(
        "medlens.serving.app:app_from_environment",
        factory=True,
        workers=workers,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        # a worker loading its models (torch, the ONNX export, sessions) can hold the GIL and
        # miss uvicorn's 5 s pings; killed and restarted, it never came up on a busy machine
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_S,
    )
    try:
        run_workers(config)
    finally:
        shutil.rmtree(shared, ignore_errors=True)
