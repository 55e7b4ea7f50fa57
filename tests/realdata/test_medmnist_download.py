"""MedMNIST download against a local HTTP server serving the real .npz (never the internet)."""

from __future__ import annotations

import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from medlens.data.medmnist import fetch_medmnist, find_local, md5sum
from medlens.errors import DownloadError

pytestmark = pytest.mark.realdata


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with single-range support (what the official host does for resumes)."""

    ranges: ClassVar[list[str]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        header = self.headers.get("Range")
        path = Path(self.translate_path(self.path.split("?")[0]))
        if not header or not path.is_file():
            super().do_GET()
            return
        type(self).ranges.append(header)
        start = int(header.removeprefix("bytes=").split("-")[0])
        data = path.read_bytes()
        if start >= len(data):
            self.send_error(416)
            return
        self.send_response(206)
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        self.wfile.write(data[start:])


@pytest.fixture
def server(shared_data: Path, tmp_path: Path) -> Iterator[str]:
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(shared_data / "pneumoniamnist/pneumoniamnist.npz", served)
    (served / "adrenalmnist3d.npz").write_bytes(b"corrupted copy")

    def handler(*args: object, **kwargs: object) -> _RangeHandler:
        return _RangeHandler(*args, directory=str(served), **kwargs)  # type: ignore[arg-type]

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)  # type: ignore[arg-type]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _RangeHandler.ranges = []
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_download_verifies_and_caches(server: str, tmp_path: Path, shared_data: Path) -> None:
    cache = tmp_path / "cache"
    path = fetch_medmnist("pneumoniamnist", cache_dir=cache, mirror=server)
    assert md5sum(path) == md5sum(shared_data / "pneumoniamnist/pneumoniamnist.npz")
    mtime = path.stat().st_mtime_ns
    assert (
        fetch_medmnist("pneumoniamnist", cache_dir=cache, mirror="http://127.0.0.1:9") == path
    )  # cached
    assert path.stat().st_mtime_ns == mtime


def test_download_resumes_from_partial_file(server: str, tmp_path: Path, shared_data: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    original = (shared_data / "pneumoniamnist/pneumoniamnist.npz").read_bytes()
    (cache / "pneumoniamnist.npz.part").write_bytes(original[:1_000_000])
    path = fetch_medmnist("pneumoniamnist", cache_dir=cache, mirror=server)
    assert _RangeHandler.ranges == ["bytes=1000000-"]
    assert path.read_bytes() == original and not (cache / "pneumoniamnist.npz.part").exists()


def test_checksum_mismatch_is_refused(server: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="checksum mismatch"):
        fetch_medmnist("adrenalmnist3d", cache_dir=cache, mirror=server)
    assert not list(cache.iterdir())


def test_unreachable_server_and_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="failed"):
        fetch_medmnist("pneumoniamnist", cache_dir=tmp_path, mirror="http://127.0.0.1:9", timeout=2)
    from medlens.errors import ConfigError

    with pytest.raises(ConfigError, match="did you mean 'pneumoniamnist'"):
        fetch_medmnist("pneumoniamnst", cache_dir=tmp_path)


def test_find_local_copy(shared_data: Path) -> None:
    assert (
        find_local("pneumoniamnist", 28, [shared_data])
        == shared_data / "pneumoniamnist/pneumoniamnist.npz"
    )
    assert find_local("adrenalmnist3d", 64, [shared_data]) is not None
