"""The floor of the serving benchmark: the same uvicorn server (httptools) with a Starlette route
that only parses the upload (multipart, or the raw body) and answers a small JSON, no model.

Whatever a request costs here, `medlens serve` pays too before any work on the image starts.

    python -m benchmarks.echo_server PORT
"""

from __future__ import annotations

import sys

import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def echo(request: Request) -> JSONResponse:
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        upload = (await request.form())["file"]
        assert isinstance(upload, UploadFile)
        data = await upload.read()
    else:
        data = await request.body()
    return JSONResponse({"bytes": len(data)})


app = Starlette(routes=[Route("/v1/models/{name}/predict", echo, methods=["POST"])])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
