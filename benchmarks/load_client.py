"""A load generator for the serving benchmark: N keep-alive HTTP/1.1 clients as coroutines in one
event loop, in a process of its own.

Python threads with http.client (one per client) spend much of the 2 cores on the GIL hand-off
once there are dozens of them, and that cost was being counted against the server; coroutines
on one loop cost a fraction of it.

    python -m benchmarks.load_client --port P --path /v1/models/M/predict --token T \
        --body FILE --content-type TYPE --clients 32 --seconds 30 --out RESULT.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any


async def _client(port: int, request: bytes, stop: float, results: dict[str, list[Any]]) -> None:
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while time.perf_counter() < stop:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert reader is not None
            began = time.perf_counter()
            writer.write(request)
            await writer.drain()
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            results["latency_s"].append(time.perf_counter() - began)
            results["status"].append(status)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            results["lost"].append(1)
            if writer is not None:
                writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def run(
    port: int, path: str, token: str, body: bytes, kind: str, clients: int, seconds: float
) -> dict[str, Any]:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: {kind}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    results: dict[str, list[Any]] = {"latency_s": [], "status": [], "lost": []}
    began = time.perf_counter()
    stop = began + seconds
    await asyncio.gather(*(_client(port, head + body, stop, results) for _ in range(clients)))
    return {
        "elapsed_s": time.perf_counter() - began,
        "latency_s": results["latency_s"],
        "status": results["status"],
        "lost": len(results["lost"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--body", type=Path, required=True)
    parser.add_argument("--content-type", required=True)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    # a file, not stdout: the event loop may leave stdout non-blocking, and a large print to a
    # pipe then breaks off part-way
    args = parser.parse_args()
    try:
        from uvloop import run as run_loop
    except ImportError:
        run_loop = asyncio.run  # type: ignore[assignment]
    out = run_loop(
        run(
            args.port,
            args.path,
            args.token,
            args.body.read_bytes(),
            args.content_type,
            args.clients,
            args.seconds,
        )
    )
    args.out.write_text(json.dumps(out))


if __name__ == "__main__":
    main()
