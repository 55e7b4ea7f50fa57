"""`medlens serve` as a real process on 127.0.0.1 (random port), and the web viewer in a real
headless Chromium driven by Selenium. Each test starts and stops its server by PID."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from medlens.io import read_image, write_image
from medlens.serving.workers import listeners
from tests.unit.test_serving import TOKEN, make_artifact, png_bytes

pytestmark = pytest.mark.integration
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    model: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running(root: Path, model: Path, *extra: str) -> Iterator[Server]:
    """`medlens serve MODEL` on a free port until the block ends, then SIGTERM to its PID."""
    tokens = root / "tokens"
    tokens.write_text(TOKEN + "\n")
    port = free_port()
    env = {**os.environ, "MEDLENS_CACHE": str(root / "cache")}
    process = subprocess.Popen(
        [sys.executable, "-m", "medlens.cli.main", "serve", str(model), "--port", str(port),
         "--token-file", str(tokens), "--audit-log", str(root / "audit.jsonl"), *extra],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out = process.stdout.read().decode() if process.stdout else ""
            pytest.fail(f"medlens serve exited early: {out}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
                if response.status == 200:
                    break
        except OSError:
            time.sleep(0.2)
    else:
        process.kill()
        pytest.fail("medlens serve did not come up within 90 s")
    try:
        yield Server(url, process, "chest2d")
    finally:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("live")
    with running(root, make_artifact(root / "model"), "--batch-window-ms", "20") as live:
        yield live


def children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def connections_per_process(pids: set[int], port: int) -> dict[int, int]:
    """Established connections to ``port`` held by each of ``pids`` (from /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    counts = {}
    for pid in pids:
        held = 0
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = str(fd.readlink())
            except OSError:
                continue
            held += target.startswith("socket:[") and target[8:-1] in inodes
        if held:
            counts[pid] = held
    return counts


def running_pid(pid: int) -> bool:
    """Alive and not a zombie (an exited worker whose reaper has not collected it yet)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def test_worker_processes_share_the_port_and_the_metrics(tmp_path: Path) -> None:
    with running(tmp_path, make_artifact(tmp_path / "model"), "--workers", "2") as live:
        path = f"/v1/models/{live.model}/predict"
        deadline = time.monotonic() + 30
        while len(children(live.process.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)  # uvicorn starts its workers after binding the port
        workers = children(live.process.pid)
        assert len(workers) >= 2
        port = int(live.url.rsplit(":", 1)[1])
        while listeners(port) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)  # each worker listens once its models are loaded
        assert listeners(port) == 2  # the parent holds the port without listening
        clients = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(16)]
        for client in clients:  # keep-alive connections, opened one after the other
            client.request("GET", "/health")
            assert client.getresponse().read()
        spread = connections_per_process(workers, port)
        assert sum(spread.values()) == 16 and len(spread) == 2, spread  # both workers serve
        for client in clients:
            client.close()
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda k: request(live, path, png_bytes(k)), range(40)))
        assert all(status == 200 for status, _, _ in answers)
        singles = [request(live, path, png_bytes(k))[1]["probabilities"] for k in range(3)]
        assert singles == [answers[k][1]["probabilities"] for k in range(3)]
        time.sleep(1.5)  # each worker shares its figures at least once a second
        req = urllib.request.Request(
            f"{live.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        with urllib.request.urlopen(req, timeout=10) as response:
            text = response.read().decode()
        served = sum(
            int(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith('medlens_requests_total{route="predict"') and 'status="200"' in line
        )
        assert served == 43, text  # the whole service, whichever worker answered the scrape
        audit = (tmp_path / "audit.jsonl").read_text().splitlines()
        assert len([json.loads(line) for line in audit]) == 43  # whole lines from both workers
    time.sleep(0.5)
    assert not [p for p in workers if running_pid(p)], "workers outlived the server"


def request(
    server: Server, path: str, data: bytes | None = None, token: str | None = TOKEN
) -> tuple[int, dict[str, object], dict[str, str]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if data is not None:
        boundary = uuid.uuid4().hex
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
                f"Content-Type: image/png\r\n\r\n"
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
        req = urllib.request.Request(server.url + path, body, headers, method="POST")
    else:
        req = urllib.request.Request(server.url + path, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}"), dict(err.headers)


def test_live_server_auth_predict_and_errors(server: Server) -> None:
    assert request(server, "/health", token=None)[0] == 200
    assert request(server, "/v1/models", token=None)[0] == 401
    assert request(server, "/v1/models", token="wrong-token-0000000000")[0] == 403
    status, body, _ = request(server, "/v1/models")
    assert status == 200 and body["models"][0]["name"] == server.model  # type: ignore[index]
    status, body, _ = request(server, f"/v1/models/{server.model}/predict", png_bytes(1))
    assert status == 200 and body["prediction"] in ("normal", "nodule")
    status, body, _ = request(server, f"/v1/models/{server.model}/predict", b"not an image")
    assert status == 422 and "Traceback" not in str(body["detail"])
    assert server.process.poll() is None, "a bad request must not bring the server down"


def test_live_concurrent_clients_get_their_own_results(server: Server) -> None:
    images = [png_bytes(seed) for seed in range(32)]
    path = f"/v1/models/{server.model}/predict"
    alone = [request(server, path, data)[1]["calibrated_probabilities"] for data in images]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda d: request(server, path, d), images))
    assert all(status == 200 for status, _, _ in results)
    for single, (_, body, _) in zip(alone, results, strict=True):
        assert body["calibrated_probabilities"] == pytest.approx(single, abs=1e-5)


def _chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver):
        if os.environ.get("CI"):
            pytest.fail("chromium and chromium-driver are missing: `make sysdeps` installs them")
        pytest.skip("chromium / chromedriver not installed (make sysdeps)")
    return browser, driver


def test_viewer_in_a_real_browser(server: Server, tmp_path: Path, shared_data: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser, driver_path = _chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1400,1000",
    ):  # fmt: skip
        options.add_argument(flag)
    npz = shared_data / "pneumoniamnist" / "pneumoniamnist.npz"
    image = write_image(read_image(f"{npz}#test/0"), tmp_path / "chest.png")  # a real X-ray
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get(server.url + "/")
        driver.find_element(By.ID, "token").send_keys(TOKEN)
        driver.find_element(By.ID, "login").click()
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: d.find_element(By.ID, "app").is_displayed())
        assert "chest2d" in driver.find_element(By.ID, "model").text
        driver.find_element(By.ID, "file").send_keys(str(image))
        wait.until(lambda d: d.find_element(By.ID, "prediction").text not in ("", "-"))
        assert driver.find_element(By.ID, "prediction").text in ("normal", "nodule")
        assert float(driver.find_element(By.ID, "probability").text) >= 0
        assert "deletion" in driver.find_element(By.ID, "faithfulness").text
        assert "chest.png" in driver.find_element(By.ID, "recent").text
        # the heatmap is drawn: coloured (not grey) pixels on the canvas
        coloured = driver.execute_script(
            "const c = document.getElementById('canvas');"
            "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            "let n = 0; for (let i = 0; i < d.length; i += 4)"
            "  if (Math.abs(d[i] - d[i + 2]) > 20) n++; return n;"
        )
        assert coloured > 0, "no heatmap colour on the canvas"
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "viewer.png"))
        # another heatmap method analyses the same image again, and so does picking it again
        from selenium.webdriver.support.ui import Select

        Select(driver.find_element(By.ID, "method")).select_by_value("occlusion")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#recent li")) == 2)
        assert "occlusion" in driver.find_elements(By.CSS_SELECTOR, "#recent li")[0].text
        wait.until(lambda d: "occlusion" in d.find_element(By.ID, "faithfulness").text)
        driver.find_element(By.ID, "file").send_keys(str(image))
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#recent li")) == 3)
    finally:
        driver.quit()
