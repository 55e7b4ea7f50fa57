"""`medlens serve` over loopback: predict latency through HTTP vs the same decode + preprocess +
ONNX Runtime call in-process (same model, same image, same run), then throughput with 1, 8, 32
and 64 concurrent keep-alive clients (bounded in time), counting 5xx and lost requests.

The load clients (coroutines in a separate process) and the server share the machine's cores,
so on 2 cores the clients' own work is part of every figure; the ratios are what to compare.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import RESULTS, SHARED, commit, write_result
from medlens.data.labels import LabelSpec
from medlens.inference import load_artifact, save_artifact
from medlens.inference.bf16 import check_bf16
from medlens.inference.engine import Engine
from medlens.inference.quantize import quantize_artifact
from medlens.io import read_image, write_image
from medlens.models import create_model
from medlens.models.tta import TTA
from medlens.serving.workers import listeners

TOKEN = "benchmark-token-0123456789"
#: case -> (model, input size (its length: 2D or 3D), options, precision, test-time shift);
#: ``MEDLENS_BENCH_MODELS=a,b`` runs a subset
MODELS = {
    "compactnet-28": ("compactnet", [28, 28], {"widths": [32, 64, 128, 256]}, "fp32", 0),
    # as `medlens train` ships a 28 px model: the 9 one-pixel shifts in every forward pass
    "compactnet-28-tta": ("compactnet", [28, 28], {"widths": [32, 64, 128, 256]}, "fp32", 1),
    "resnet18-224": ("resnet18", [224, 224], {}, "fp32", 0),
    # INT8 ResNet-18 is ~25 % cheaper per image at batch 32 than at batch 1 (fp32 is not): the
    # case where dynamic batching can raise throughput on a CPU
    "resnet18-224-int8": ("resnet18", [224, 224], {}, "int8", 0),
    # bfloat16 on OpenVINO (CPUs with AVX512-BF16 or AMX): no calibration, the fp32 graph
    "resnet18-224-bf16": ("resnet18", [224, 224], {}, "bf16", 0),
    # an AdrenalMNIST3D volume as `medlens train` ships the model: 27 one-voxel shifts, served
    # on OpenVINO's provider (NIfTI upload)
    "compactnet3d-28-tta": (
        "compactnet",
        [28, 28, 28],
        {"widths": [24, 48, 96, 192], "stem_stride": 2},
        "fp32",
        1,
    ),
}
#: the image each case posts, by spatial dimensions: a PNG, or a gzipped NIfTI volume
SAMPLES = {
    2: (f"{SHARED / 'pneumoniamnist' / 'pneumoniamnist.npz'}#test/0", "sample.png", "image/png"),
    3: (
        f"{SHARED / 'adrenalmnist3d' / 'adrenalmnist3d.npz'}#test/0",
        "sample.nii.gz",
        "application/octet-stream",
    ),
}
LATENCY_REQUESTS = 200
CLIENTS = (1, 8, 32, 64)
SECONDS = float(os.environ.get("MEDLENS_BENCH_SECONDS", 30))
WORKERS = os.cpu_count() or 2  # the multi-process run: `medlens serve --workers N`


def _artifact(
    folder: Path, name: str, size: list[int], options: dict[str, Any], precision: str, shift: int
) -> Path:
    torch.manual_seed(0)
    model = create_model(name, len(size), 1, 2, **options)
    saved = save_artifact(
        folder,
        [model],
        labels=LabelSpec("binary", ["normal", "pneumonia"], ["0", "1"]),
        preprocessing=[
            {"name": "percentile_clip", "lower": 0.5, "upper": 99.5},
            {"name": "zscore"},
            {"name": "resize", "shape": size},
        ],
        plan={"input_size": size},
        operating_point={
            "temperature": 1.0,
            "threshold": 0.5,
            "method": "youden",
            **TTA(shift=shift).to_meta(),
        },
        metrics={},
        data_hash="benchmark",
        name=folder.name,
    )
    if precision == "int8":  # calibrated on random inputs: the weights are random too
        calibration = np.random.default_rng(1).normal(size=(48, 1, *size)).astype(np.float32)
        quantize_artifact(load_artifact(saved), calibration[:32], calibration[32:])
    if precision == "bf16":  # serving refuses bf16 without a check on the current weights
        check = np.random.default_rng(1).normal(size=(16, 1, *size)).astype(np.float32)
        check_bf16(load_artifact(saved), check)
    return saved


def _multipart(data: bytes, filename: str = "x.png", kind: str = "image/png") -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"'
            f"\r\nContent-Type: {kind}\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


class Client:
    """One keep-alive connection posting the same image (multipart, or as the raw body)."""

    def __init__(
        self, port: int, model: str, sample: Path, kind: str = "image/png", raw: bool = False
    ):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        data = sample.read_bytes()
        self.body, kind = (data, kind) if raw else _multipart(data, sample.name, kind)
        self.headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": kind}
        self.path = f"/v1/models/{model}/predict"

    def predict(self) -> int:
        return self.call()[0]

    def call(self) -> tuple[int, bytes]:
        self.connection.request("POST", self.path, self.body, self.headers)
        response = self.connection.getresponse()
        return response.status, response.read()


def _stages(answer: dict[str, Any], seconds: float) -> dict[str, float]:
    """Where one request's time went, from the server's own ``timing_ms`` fields."""
    total, read = answer["timing_ms"]["total"], answer["timing_ms"]["read"]
    return {
        "receive_decode_preprocess": read,
        "queue_inference_handback": answer["inference_ms"],
        "rest_of_handler": total - read - answer["inference_ms"],
        "http_and_client": 1000 * seconds - total,
    }


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {f"p{q}_ms": round(float(np.percentile(ms, q)), 3) for q in (50, 95, 99)}


def _load_test(port: int, model: str, body: Path, kind: str, clients: int) -> dict[str, Any]:
    """``clients`` keep-alive clients for SECONDS, from a separate process (benchmarks.load_client)."""
    subprocess.run(
        [sys.executable, "-m", "benchmarks.load_client", "--port", str(port),
         "--path", f"/v1/models/{model}/predict", "--token", TOKEN, "--body", str(body),
         "--content-type", kind, "--clients", str(clients), "--seconds", str(SECONDS),
         "--out", str(body.with_suffix(".result.json"))],
        check=True, timeout=SECONDS + 120, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    out = json.loads(body.with_suffix(".result.json").read_text())
    statuses = out["status"]
    ok = sum(1 for s in statuses if s == 200)
    return {
        "clients": clients,
        "images_per_s": round(ok / out["elapsed_s"], 1),
        "requests": len(statuses),
        "status_5xx": sum(1 for s in statuses if s >= 500),
        "status_503": sum(1 for s in statuses if s == 503),
        "lost": out["lost"],
        **_percentiles(out["latency_s"] or [0.0]),
    }


def _serve(
    model_dir: Path, root: Path, window_ms: float, precision: str, workers: int = 1
) -> tuple[subprocess.Popen[bytes], int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    tokens = root / "tokens"
    tokens.write_text(TOKEN + "\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "medlens.cli.main", "serve", str(model_dir), "--port", str(port),
         "--token-file", str(tokens), "--audit-log", str(root / f"audit-{port}.jsonl"),
         "--batch-window-ms", str(window_ms), "--max-queue", "256", "--workers", str(workers), "--precision", precision],
        env={**os.environ, "MEDLENS_CACHE": str(root / "cache")},
        stdout=(root / f"server-{port}.log").open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", "/health")
            # every worker ready (listening), or the first clients would all go to the first
            if connection.getresponse().status == 200 and listeners(port) >= workers:
                _wait_for_warm_up(port)
                return process, port
        except OSError:
            pass
        time.sleep(0.2)
    process.kill()
    log = (root / f"server-{port}.log").read_text(errors="replace")[-2000:]
    raise RuntimeError(f"server did not start ({listeners(port)} of {workers} listening): {log}")


def _wait_for_warm_up(port: int, answers: int = 8) -> None:
    """Until ``answers`` fresh connections in a row (spread over the workers) report no model
    still running its start-up explanation, which would compete with the measurements."""
    calm = 0
    deadline = time.monotonic() + 120
    while calm < answers and time.monotonic() < deadline:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/ready", headers={"Authorization": f"Bearer {TOKEN}"})
        warming = json.loads(connection.getresponse().read()).get("warming", [])
        connection.close()
        calm = 0 if warming else calm + 1
        time.sleep(0.1 if not warming else 0.3)


@contextmanager
def _echo_server() -> Iterator[int]:
    """The port of a uvicorn + Starlette route that only parses the upload
    (benchmarks.echo_server): the part of the HTTP overhead no service can avoid, measured
    interleaved with the real one."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.echo_server", str(port)],
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the echo server did not start") from None
                time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, _echo_server() as echo_port:
        root = Path(tmp)
        samples = {
            dims: (write_image(read_image(source), root / filename), kind)
            for dims, (source, filename, kind) in SAMPLES.items()
        }
        chosen = os.environ.get("MEDLENS_BENCH_MODELS")
        for case, (name, size, options, precision, shift) in MODELS.items():
            if chosen and case not in chosen.split(","):
                continue
            sample, kind = samples[len(size)]
            folder = _artifact(root / case, name, size, options, precision, shift)
            artifact = load_artifact(folder)
            engine = Engine(
                artifact, backend="onnx", cache_dir=root / "cache" / "onnx", precision=precision
            )

            def in_process(a: Any = artifact, e: Engine = engine, path: Path = sample) -> None:
                image = read_image(path)
                e.logits(a.preprocess(image)[None])

            rows: dict[str, Any] = {"provider": engine.provider}
            for window in (0.0, 5.0):
                process, port = _serve(folder, root, window, precision)
                try:
                    client = Client(port, case, sample, kind)
                    raw = Client(port, case, sample, kind, raw=True)
                    echo = Client(echo_port, "echo", sample, kind)
                    for _ in range(10):
                        client.predict()
                        raw.predict()
                        echo.predict()
                        in_process()

                    def post(c: Client) -> bytes:
                        status, answer = c.call()
                        assert status == 200
                        return answer

                    calls: dict[str, Callable[[], Any]] = {
                        "http": lambda: post(client),
                        "raw": lambda: post(raw),
                        "floor": lambda: post(echo),
                        "local": in_process,
                    }
                    series: dict[str, list[float]] = {label: [] for label in calls}
                    stages = []
                    order = np.random.default_rng(0)
                    # interleaved (same background for all), in a new order every round: the
                    # first request after the in-process call finds the server's threads
                    # asleep longest, which in a fixed order always fell on one kind of request
                    for _ in range(LATENCY_REQUESTS):
                        for label in order.permutation(list(calls)):
                            began = time.perf_counter()
                            answer = calls[label]()
                            series[label].append(time.perf_counter() - began)
                            if label == "http":
                                stages.append(_stages(json.loads(answer), series[label][-1]))
                    local, remote, remote_raw, floor = (
                        series[label] for label in ("local", "http", "raw", "floor")
                    )
                    here = _percentiles(local)
                    there, there_raw = _percentiles(remote), _percentiles(remote_raw)
                    for figures in (there, there_raw):
                        figures["p50_overhead_pct"] = round(
                            100 * (figures["p50_ms"] / here["p50_ms"] - 1), 1
                        )
                    rows[f"window_{window:g}ms"] = {
                        "in_process": here,
                        "http": there,
                        "http_raw_body": there_raw,
                        "http_floor": _percentiles(floor),
                        "server_stages_p50_ms": {
                            k: round(float(np.median([st[k] for st in stages])), 3)
                            for k in stages[0]
                        },
                    }
                    if window == 0.0:
                        body, form = _multipart(sample.read_bytes(), sample.name, kind)
                        (root / "body").write_bytes(body)
                        load = [_load_test(port, case, root / "body", form, n) for n in CLIENTS]
                        rows["throughput"] = load
                        rows["throughput_ratio_32_vs_1"] = round(
                            load[2]["images_per_s"] / load[0]["images_per_s"], 2
                        )
                finally:
                    os.kill(process.pid, signal.SIGTERM)
                    process.wait(timeout=30)
            process, port = _serve(folder, root, 0.0, precision, workers=WORKERS)
            try:
                body, form = _multipart(sample.read_bytes(), sample.name, kind)
                (root / "body").write_bytes(body)
                load = [_load_test(port, case, root / "body", form, n) for n in CLIENTS]
                rows[f"throughput_{WORKERS}_workers"] = load
                rows[f"throughput_ratio_32_vs_1_{WORKERS}_workers"] = round(
                    load[2]["images_per_s"] / load[0]["images_per_s"], 2
                )
            finally:
                os.kill(process.pid, signal.SIGTERM)
                process.wait(timeout=30)
            rows["measured"] = {"date": time.strftime("%Y-%m-%d %H:%M"), "commit": commit()}
            results[case] = rows
    if chosen:  # a subset run keeps the other cases' earlier rows
        earlier = RESULTS / "serving.json"
        if earlier.is_file():
            results = {**json.loads(earlier.read_text()).get("models", {}), **results}
    write_result(
        "serving",
        {
            "description": (
                "predict over loopback HTTP (multipart upload, and the file as the raw body: "
                "http_raw_body) vs decode + preprocess + ONNX Runtime in-process "
                f"({LATENCY_REQUESTS} sequential requests of each interleaved with the in-process calls, "
                "one PneumoniaMNIST test PNG for 2D models, one AdrenalMNIST3D test volume as "
                ".nii.gz for 3D ones, untrained "
                f"weights); throughput with {list(CLIENTS)} keep-alive clients for {SECONDS:g} s "
                "each, coroutines in a separate client process (batch window 0 ms: a batch is "
                f"whatever is queued), with 1 server process and with --workers {WORKERS}; "
                "http_floor: the multipart upload to a uvicorn + Starlette route that only "
                "parses it (benchmarks.echo_server), interleaved with the rest: the overhead no "
                "service avoids"
            ),
            "models": results,
        },
    )


if __name__ == "__main__":
    main()
