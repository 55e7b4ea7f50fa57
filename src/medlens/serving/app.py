"""The FastAPI application of `medlens serve`: routes, authentication, limits, errors, audit.

Every route except ``/health`` and the viewer's static files (which hold no data) needs a bearer
token; the OpenAPI document is served to token holders only and the interactive docs are off.
Nothing a client sends reaches the client back as a traceback: refusals are one line with a
4xx status, unexpected failures a 500 whose details stay in the server log.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from medlens.errors import MedlensError
from medlens.explain import METHODS
from medlens.inference.batching import QueueFullError
from medlens.io.image import MedicalImage
from medlens.serving.service import ModelService
from medlens.serving.settings import CONFIG_ENV, ServeSettings, token_id
from medlens.serving.telemetry import (
    AuditLog,
    Metrics,
    SharedMetrics,
    audit_to_stderr,
    render,
)
from medlens.serving.uploads import UploadError, read_reference, read_upload

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
RETRY_AFTER_S = 1
#: content types sent as the raw request body; the format is read from the bytes themselves
RAW_TYPES = ("application/octet-stream", "application/dicom", "application/zip", "image/")
RAW_SUFFIX = {"application/dicom": ".dcm", "application/zip": ".zip"}
#: the request body of predict/explain in the OpenAPI document (the routes parse it themselves)
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"path": {"type": "string"}},
                    "required": ["path"],
                }
            },
        },
    },
    "parameters": [
        {
            "name": "filename",
            "in": "query",
            "required": False,
            "schema": {"type": "string"},
            "description": "name of a raw-body upload, used in error messages",
        }
    ],
}


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` (declared or streamed) with 413
    before they are parsed or spooled to disk."""

    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return
        seen = 0

        async def limited() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _TooLargeError
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLargeError:
            await self._refuse(send)

    async def _refuse(self, send: Any) -> None:
        response = JSONResponse({"detail": f"request body over {self.max_bytes:,} bytes"}, 413)
        await response({"type": "http"}, _no_receive, send)


class _TooLargeError(Exception):
    pass


async def _no_receive() -> dict[str, Any]:
    return {"type": "http.disconnect"}


def create_app(settings: ServeSettings, services: list[ModelService] | None = None) -> FastAPI:
    """An application serving ``services`` (built from ``settings.model_dirs`` when omitted)."""
    models = {s.name: s for s in services} if services is not None else _load(settings)
    metrics, audit = Metrics(), AuditLog(settings.audit_log)

    def snapshot() -> dict[str, Any]:
        depths = {n: s.batcher.depth for n, s in models.items()}
        batches = {n: (s.batcher.batches, s.batcher.images) for n, s in models.items()}
        return metrics.snapshot(depths, batches)

    shared = SharedMetrics(settings.metrics_dir, snapshot) if settings.metrics_dir else None
    tokens = [t.encode() for t in settings.tokens]
    allowed = [d.resolve() for d in settings.allowed_dirs]

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        for service in models.values():
            service.close()
        audit.close()
        if shared is not None:
            shared.close()

    app = FastAPI(
        title="medlens",
        version="1",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.state.models = models

    # async: FastAPI runs a plain-def dependency on a worker thread, a hop that cost every
    # request ~0.15 ms at the loopback p50 (A/B of two servers, requests alternated, both orders)
    async def authorise(request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise HTTPException(401, "bearer token required", {"WWW-Authenticate": "Bearer"})
        candidate = given.strip().encode()
        matched = [hmac.compare_digest(candidate, t) for t in tokens]  # no early exit
        if not any(matched):
            raise HTTPException(403, "token not accepted")
        return token_id(candidate.decode(errors="replace"))

    def service_for(name: str) -> ModelService:
        if name not in models:
            raise HTTPException(404, f"no model {name!r}; GET /v1/models lists them")
        return models[name]

    async def receive(request: Request) -> tuple[bytes, str] | str:
        """The bytes and name of an upload (a multipart ``file`` field, or the raw body with its
        name in ``?filename=``), or the path of a JSON reference."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind.startswith(RAW_TYPES):  # no multipart parsing: e.g. curl --data-binary @scan.dcm
            name = request.query_params.get("filename") or "upload" + RAW_SUFFIX.get(kind, "")
            return await request.body(), name
        if kind == "multipart/form-data":
            try:
                form = await request.form(max_files=1, max_fields=4)
            except StarletteHTTPException as err:  # python-multipart's refusals
                raise UploadError(400, f"malformed multipart body: {err.detail}") from None
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise UploadError(400, "multipart upload without a 'file' field")
            return await upload.read(settings.limits.max_bytes + 1), upload.filename or "upload"
        if kind == "application/json":
            try:
                body = await request.json()
            except ValueError:
                raise UploadError(400, "request body is not valid JSON") from None
            if not isinstance(body, dict) or not isinstance(body.get("path"), str):
                raise UploadError(400, 'JSON body must be {"path": "..."}')
            return str(body["path"])
        raise UploadError(
            415,
            'send multipart/form-data with a "file" field, the file itself as '
            'application/octet-stream (or application/dicom, image/png, ...), or JSON {"path": ...}',
        )

    def decode(
        service: ModelService, received: tuple[bytes, str] | str
    ) -> tuple[MedicalImage, MedicalImage, str | None, float | None]:
        """Read and preprocess in one worker-thread hop: the image, the model's grid, the
        digest of a referenced file and how far the grid's pixels are from the training
        images' (the embedding's part follows the forward pass)."""
        digest = None
        if isinstance(received, str):
            image, digest = read_reference(received, allowed, settings.limits)
        else:
            image = read_upload(*received, settings.limits)
        grid = service.artifact.prepared(image)
        return image, grid, digest, service.pixel_distance(grid)

    async def handle(
        route: str,
        name: str,
        request: Request,
        token: str,
        work_fn: Callable[
            [ModelService, MedicalImage, MedicalImage, float | None], Awaitable[dict[str, Any]]
        ],
    ) -> Response:
        started = time.perf_counter()
        status, digest, outcome = 200, None, "ok"
        try:
            service = service_for(name)
            received = await receive(request)
            if not isinstance(received, str):
                digest = hashlib.sha256(received[0]).hexdigest()
            image, grid, found, pixels = await run_in_threadpool(decode, service, received)
            digest = digest or found
            read_ms = 1000 * (time.perf_counter() - started)
            body = await work_fn(service, image, grid, pixels)
            outcome = str(body.get("prediction", "ok"))
            body["input_sha256"] = digest
            body["timing_ms"] = {
                "read": round(read_ms, 2),
                "total": round(1000 * (time.perf_counter() - started), 2),
            }
            return JSONResponse(body)
        except UploadError as err:
            status, outcome = err.status, "refused"
            return JSONResponse({"detail": err.message}, err.status)
        except MedlensError as err:
            status, outcome = 422, "refused"
            return JSONResponse({"detail": " ".join(str(err).split())}, 422)
        except QueueFullError:
            status, outcome = 503, "queue full"
            return JSONResponse(
                {"detail": "the model's queue is full; retry shortly"},
                503,
                headers={"Retry-After": str(RETRY_AFTER_S)},
            )
        except HTTPException as err:
            status, outcome = err.status_code, "refused"
            raise
        except Exception:
            status, outcome = 500, "error"
            log.exception("unexpected failure in %s %s", route, name)
            return JSONResponse({"detail": "internal error (details are in the server log)"}, 500)
        finally:
            seconds = time.perf_counter() - started
            metrics.observe(route, name if name in models else "-", status, seconds)
            audit.write(
                token=token,
                route=route,
                model=name if name in models else None,
                input_sha256=digest,
                status=status,
                result=outcome,
                latency_ms=round(1000 * seconds, 2),
            )

    async def predict_work(
        service: ModelService, _image: MedicalImage, grid: MedicalImage, pixels: float | None
    ) -> dict[str, Any]:
        began = time.perf_counter()
        logits, embedding = await asyncio.wrap_future(service.submit(grid))
        body = service.result(logits) | service.typical(pixels, embedding)
        body["inference_ms"] = round(1000 * (time.perf_counter() - began), 2)
        return body

    @app.get("/health", include_in_schema=False)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready(_token: str = Depends(authorise)) -> dict[str, Any]:
        # models still running their start-up explanation (served meanwhile, a little slower)
        warming = sorted(name for name, service in models.items() if service.warming.is_alive())
        return {"ready": bool(models), "models": sorted(models), "warming": warming}

    @app.get("/v1/models")
    async def list_models(_token: str = Depends(authorise)) -> dict[str, Any]:
        return {"models": [s.describe() for s in models.values()]}

    @app.post("/v1/models/{name}/predict", openapi_extra=UPLOAD_BODY)
    async def predict(name: str, request: Request, token: str = Depends(authorise)) -> Response:
        """Class probabilities, calibrated probabilities and the decision for one image."""
        return await handle("predict", name, request, token, predict_work)

    @app.post("/v1/models/{name}/explain", openapi_extra=UPLOAD_BODY)
    async def explain(
        name: str,
        request: Request,
        method: str | None = None,
        class_name: str | None = None,
        token: str = Depends(authorise),
    ) -> Response:
        """The prediction plus a heatmap (overlay PNG, raw map) and its faithfulness figures."""
        chosen = method or settings.explain_method
        if chosen not in METHODS:
            raise HTTPException(400, f"unknown method {chosen!r}; use one of {list(METHODS)}")

        async def work(
            service: ModelService, image: MedicalImage, grid: MedicalImage, pixels: float | None
        ) -> dict[str, Any]:
            body = await predict_work(service, image, grid, pixels)
            body.update(await run_in_threadpool(service.explain, image, grid, chosen, class_name))
            return body

        return await handle("explain", name, request, token, work)

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus(_token: str = Depends(authorise)) -> str:
        return render(shared.collect() if shared is not None else [snapshot()])

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(_token: str = Depends(authorise)) -> dict[str, Any]:
        return app.openapi()

    @app.get("/", include_in_schema=False)
    async def viewer() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, err: Exception) -> JSONResponse:
        log.error("unexpected failure: %r", err)
        return JSONResponse({"detail": "internal error (details are in the server log)"}, 500)

    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(BodyLimit, max_bytes=settings.limits.max_bytes + 64 * 1024)
    return app


def _load(settings: ServeSettings) -> dict[str, ModelService]:
    models: dict[str, ModelService] = {}
    for folder in settings.model_dirs:
        service = ModelService(folder, settings)
        name, k = service.name, 2
        while name in models:  # two artifacts of the same name stay addressable
            name, k = f"{service.name}-{k}", k + 1
        service.name = name
        models[name] = service
    return models


def app_from_environment() -> FastAPI:
    """One worker of `medlens serve --workers N` (uvicorn's app factory): the settings come from
    the parent in ``MEDLENS_SERVE_CONFIG``, the tokens from their file or environment again."""
    settings = ServeSettings.from_config(os.environ[CONFIG_ENV])
    if settings.audit_log is None:
        audit_to_stderr()
    return create_app(settings)
