"""The inference service in-process: authentication, every bad input, limits, batching, audit."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import threading
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from medlens.data.fake_dicom import SeriesSpec, write_dicom_series
from medlens.data.labels import LabelSpec
from medlens.data.synthetic import chest_dataset
from medlens.data.typicality import Typicality, features
from medlens.errors import ConfigError
from medlens.inference import load_artifact, save_artifact
from medlens.inference.batching import DynamicBatcher, QueueFullError
from medlens.io import MedicalImage, write_image
from medlens.models import MedlensModel, create_model
from medlens.models.forward import batched_embeddings
from medlens.serving import uploads
from medlens.serving.app import create_app
from medlens.serving.settings import ServeSettings, load_tokens, token_id
from medlens.serving.uploads import Limits
from medlens.transforms.base import Pipeline

TOKEN = "test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def phantom_typicality(preprocessing: list[dict[str, object]], model: MedlensModel) -> Typicality:
    """The summary of 'training images' that are 32 px chest phantoms, pixels and embedding."""
    pipeline = Pipeline.from_spec(preprocessing)
    images = chest_dataset(200, size=32, seed=1).images.reshape(200, 1, 32, 32)
    arrays = np.stack([pipeline(MedicalImage(a.astype(np.float32))).array for a in images])
    rows, embedded = features(arrays), batched_embeddings([model], arrays)
    return Typicality.fit(rows[:160], rows[160:], embedded[:160], embedded[160:])


def make_artifact(folder: Path, dims: int = 2) -> Path:
    """2D: with the training images' summary (phantoms); 3D: without, as older artifacts."""
    torch.manual_seed(0)
    size = [24, 24] if dims == 2 else [12, 12, 12]
    model = create_model("compactnet", dims, 1, 2, widths=(4, 8, 8, 8))
    preprocessing: list[dict[str, object]] = [{"name": "zscore"}, {"name": "resize", "shape": size}]
    return save_artifact(
        folder,
        [model],
        labels=LabelSpec("binary", ["normal", "nodule"], ["0", "1"]),
        preprocessing=preprocessing,
        plan={"input_size": size},
        operating_point={"temperature": 1.3, "threshold": 0.5, "method": "youden"},
        metrics={"test": {"auc": 0.9}},
        data_hash="test",
        name=f"chest{dims}d",
        typicality=phantom_typicality(preprocessing, model) if dims == 2 else None,
    )


def png_bytes(seed: int = 0, size: int = 32) -> bytes:
    pixels = (np.random.default_rng(seed).random((size, size)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("serving")
    return make_artifact(root / "m2"), make_artifact(root / "m3", dims=3)


@pytest.fixture
def allowed(tmp_path: Path) -> Path:
    folder = tmp_path / "allowed"
    folder.mkdir()
    (folder / "scan.png").write_bytes(png_bytes(5))
    return folder


def client_for(models: tuple[Path, Path], tmp_path: Path, **changes: object) -> TestClient:
    settings = ServeSettings(
        model_dirs=models,
        tokens=(TOKEN,),
        onnx_cache=tmp_path / "onnx",
        audit_log=tmp_path / "audit.jsonl",
        **changes,  # type: ignore[arg-type]
    )
    return TestClient(create_app(settings))


@pytest.fixture
def client(models: tuple[Path, Path], tmp_path: Path, allowed: Path) -> Iterator[TestClient]:
    with client_for(models, tmp_path, allowed_dirs=(allowed,)) as c:
        yield c


def post(client: TestClient, data: bytes, name: str = "scan.png", model: str = "chest2d") -> object:
    return client.post(
        f"/v1/models/{model}/predict",
        headers=AUTH,
        files={"file": (name, data, "application/octet-stream")},
    )


def test_every_endpoint_but_health_needs_a_token(client: TestClient) -> None:
    assert client.get("/health").status_code == 200
    for path in ("/ready", "/v1/models", "/metrics", "/openapi.json"):
        missing = client.get(path)
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert (
            client.get(path, headers={"Authorization": "Bearer wrong-token-000000000"}).status_code
            == 403
        )
        assert client.get(path, headers=AUTH).status_code == 200
    assert post(client, png_bytes(), model="chest2d").status_code == 200
    no_auth = client.post("/v1/models/chest2d/predict", files={"file": ("a.png", png_bytes())})
    assert no_auth.status_code == 401
    assert client.get("/docs").status_code == 404  # interactive docs are off
    paths = client.get("/openapi.json", headers=AUTH).json()["paths"]
    assert "/v1/models/{name}/predict" in paths and "/v1/models/{name}/explain" in paths
    body = paths["/v1/models/{name}/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/octet-stream", "application/json"} == set(body)


def test_models_list_and_ready(client: TestClient) -> None:
    listed = client.get("/v1/models", headers=AUTH).json()["models"]
    assert {m["name"] for m in listed} == {"chest2d", "chest3d"}
    first = next(m for m in listed if m["name"] == "chest2d")
    assert first["input"] == {"spatial_dims": 2, "channels": 1, "size": [24, 24]}
    assert first["metrics"] == {"test": {"auc": 0.9}} and first["backend"] == "onnx"
    assert first["version"]
    ready = client.get("/ready", headers=AUTH).json()
    assert ready["ready"] is True and ready["models"] == ["chest2d", "chest3d"]
    assert set(ready["warming"]) <= {"chest2d", "chest3d"}  # start-up explanations under way
    for service in client.app.state.models.values():  # type: ignore[attr-defined]
        service.warming.join()
    assert client.get("/ready", headers=AUTH).json()["warming"] == []


def test_predict_matches_the_artifact(client: TestClient, models: tuple[Path, Path]) -> None:
    data = png_bytes(3)
    body = post(client, data).json()  # type: ignore[attr-defined]
    artifact = load_artifact(models[0])
    image = Image.open(io.BytesIO(data))
    batch = artifact.preprocess(MedicalImage(np.asarray(image, np.float32)[None]))[None]
    expected = artifact.probabilities(artifact.logits(batch))[0]
    got = [body["calibrated_probabilities"][c] for c in ("normal", "nodule")]
    np.testing.assert_allclose(got, expected, atol=1e-4)  # ONNX Runtime agrees with torch
    assert body["prediction"] == artifact.decide(expected[None])[0]
    assert body["model"] == "chest2d" and body["backend"] == "onnx"
    assert body["threshold"] == 0.5 and body["temperature"] == 1.3
    assert body["probability"] == body["calibrated_probabilities"][body["prediction"]]
    assert set(body["timing_ms"]) == {"read", "total"} and body["input_sha256"]
    # noise is unlike the chest phantoms the summary was made of; another phantom is not
    assert body["unlike_training"] is True
    phantom = chest_dataset(1, size=32, seed=9).images.reshape(32, 32)
    buffer = io.BytesIO()
    Image.fromarray((255 * (phantom - phantom.min()) / np.ptp(phantom)).astype(np.uint8)).save(
        buffer, format="PNG"
    )
    like = post(client, buffer.getvalue()).json()  # type: ignore[attr-defined]
    assert like["unlike_training"] is False
    assert like["distance_from_training"] < body["distance_from_training"]
    # the service's distance (pixels in the decode step, the embedding from the ONNX graph's
    # second output) is the one the torch models give
    assert artifact.embeds and artifact.typicality is not None
    torch_side = artifact.typicality.describe(batch, artifact.embeddings(batch))[0]
    assert body["distance_from_training"] == pytest.approx(
        torch_side["distance_from_training"], abs=2e-3
    )


def test_explain_returns_heatmap_overlay_and_faithfulness(client: TestClient) -> None:
    response = client.post(
        "/v1/models/chest2d/explain?method=occlusion",
        headers=AUTH,
        files={"file": ("a.png", png_bytes(4))},
    )
    body = response.json()
    assert response.status_code == 200, body
    # shown at the source resolution (32 px), not the model's 24 px grid
    assert body["heatmap"]["shape"] == [32, 32] and body["image"]["shape"] == [32, 32]
    heat = np.frombuffer(base64.b64decode(body["heatmap"]["data"]), "<f4")
    assert heat.size == 32 * 32 and np.isfinite(heat).all()
    assert body["image"]["spacing"] == [1.0, 1.0]
    assert base64.b64decode(body["overlay_png"]).startswith(b"\x89PNG")
    assert body["explanation"]["method"] == "occlusion"
    assert {"deletion_auc", "random_deletion_auc"} <= set(body["explanation"]["faithfulness"])
    bad = client.post(
        "/v1/models/chest2d/explain?method=lime",
        headers=AUTH,
        files={"file": ("a.png", png_bytes())},
    )
    assert bad.status_code == 400 and "unknown method" in bad.json()["detail"]


def test_3d_dicom_zip_and_nifti(client: TestClient, tmp_path: Path) -> None:
    volume = np.random.default_rng(0).normal(0, 100, (10, 16, 16))
    series = tmp_path / "series"
    write_dicom_series(volume, series, SeriesSpec())
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for k, f in enumerate(sorted(series.iterdir())):
            archive.write(f, f"study/series/{k}.dcm")
    body = post(client, buffer.getvalue(), "series.zip", model="chest3d").json()  # type: ignore[attr-defined]
    assert body["prediction"] in ("normal", "nodule"), body
    assert "unlike_training" not in body  # an artifact without the training images' summary
    nifti = write_image(MedicalImage(volume[None].astype(np.float32)), tmp_path / "v.nii.gz")
    response = client.post(
        "/v1/models/chest3d/explain", headers=AUTH, files={"file": ("v.nii.gz", nifti.read_bytes())}
    )
    assert response.status_code == 200 and response.json()["heatmap"]["shape"] == [10, 16, 16]


def test_a_dicom_series_over_the_value_limit_is_refused(
    models: tuple[Path, Path], tmp_path: Path
) -> None:
    series = tmp_path / "allowed" / "series"
    write_dicom_series(np.zeros((10, 16, 16)), series, SeriesSpec())  # 2,560 values
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for f in sorted(series.iterdir()):
            archive.write(f, f"series/{f.name}")
    settings = {"limits": Limits(max_pixels=2_000), "allowed_dirs": (series.parent,)}
    with client_for(models, tmp_path, **settings) as client:
        zipped = post(client, buffer.getvalue(), "series.zip", model="chest3d")
        by_path = client.post(
            "/v1/models/chest3d/predict", headers=AUTH, json={"path": str(series)}
        )
        for response in (zipped, by_path):
            assert response.status_code == 413  # type: ignore[attr-defined]
            assert "decodes to more than 2,000 values" in response.json()["detail"]  # type: ignore[attr-defined]
            assert str(tmp_path) not in response.json()["detail"]  # type: ignore[attr-defined]


def test_raw_body_uploads_match_multipart(client: TestClient, tmp_path: Path) -> None:
    """The file itself as the body (curl --data-binary): any format, read from its bytes."""

    def raw(data: bytes, kind: str, model: str, query: str = "") -> dict[str, object]:
        response = client.post(
            f"/v1/models/{model}/predict{query}",
            headers=AUTH | {"Content-Type": kind},
            content=data,
        )
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def same(a: dict[str, object], b: dict[str, object]) -> None:
        assert a["probabilities"] == b["probabilities"]
        assert a["input_sha256"] == b["input_sha256"]

    same(raw(png_bytes(3), "image/png", "chest2d"), post(client, png_bytes(3)).json())  # type: ignore[attr-defined]
    volume = np.random.default_rng(1).normal(0, 100, (10, 16, 16)).astype(np.float32)
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha"):  # no name: the format is in the bytes
        data = write_image(MedicalImage(volume[None]), tmp_path / f"v{suffix}").read_bytes()
        multipart = post(client, data, f"v{suffix}", model="chest3d").json()  # type: ignore[attr-defined]
        same(raw(data, "application/octet-stream", "chest3d"), multipart)
        # a misleading name in the multipart upload is overruled by the content as well
        same(post(client, data, "scan.png", model="chest3d").json(), multipart)  # type: ignore[attr-defined]
    series = tmp_path / "series"
    write_dicom_series(volume, series, SeriesSpec())
    one = sorted(series.iterdir())[0].read_bytes()
    single = post(client, one, "slice.dcm").json()  # type: ignore[attr-defined]
    same(raw(one, "application/dicom", "chest2d"), single)
    refused = client.post(
        "/v1/models/chest2d/predict?filename=cut.png",
        headers=AUTH | {"Content-Type": "image/png"},
        content=png_bytes()[:60],
    )
    assert refused.status_code == 422 and refused.json()["detail"].startswith("cut.png:")
    for kind in ("text/plain", "application/x-www-form-urlencoded"):
        wrong = client.post(
            "/v1/models/chest2d/predict", headers=AUTH | {"Content-Type": kind}, content=b"x"
        )
        assert wrong.status_code == 415 and "application/octet-stream" in wrong.json()["detail"]


def test_bad_inputs_get_a_4xx_with_one_line(client: TestClient, tmp_path: Path) -> None:
    dicom_like = b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage" * 20
    nifti = write_image(
        MedicalImage(np.zeros((1, 8, 8, 8), np.float32)), tmp_path / "vol.nii.gz"
    ).read_bytes()
    secret = tmp_path / "secret.raw"  # a server file a header could point the reader at
    secret.write_bytes(bytes(range(256)) * 2)
    meta = "ObjectType = Image\nNDims = 3\nDimSize = 8 8 8\nElementType = MET_UCHAR\n"
    nrrd = "NRRD0004\ntype: uint8\ndimension: 3\nsizes: 8 8 8\nencoding: raw\n"
    cases = {
        "not an image": (b"hello, world", "notes.txt", 422),
        "corrupt DICOM": (dicom_like, "x.dcm", 422),
        "truncated PNG": (png_bytes()[:60], "cut.png", 422),
        "wrong dimensionality": (nifti, "vol.nii.gz", 422),
        "empty upload": (b"", "empty.png", 400),
        "corrupt zip": (b"PK\x03\x04broken", "x.zip", 400),
        "detached MetaImage": (f"{meta}ElementDataFile = {secret}\n".encode(), "x.mhd", 400),
        "detached, as .mha": (f"{meta}ElementDataFile = {secret}\n".encode(), "x.mha", 400),
        "detached NRRD": (f"{nrrd}data file: {secret}\n\n".encode(), "x.nhdr", 400),
        "corrupt MHA": (b"ObjectType = Image\nNDims = 3\nDimSize = 9 9\n", "x.mha", 422),
        "corrupt NRRD": (b"NRRD0004\ntype: float\ndimension: 3\nsizes: 2 2\n\n", "x.nrrd", 422),
    }
    for label, (data, name, status) in cases.items():
        response = post(client, data, name)
        detail = response.json()["detail"]  # type: ignore[attr-defined]
        assert response.status_code == status, (label, detail)  # type: ignore[attr-defined]
        assert "\n" not in detail and "Traceback" not in detail and str(tmp_path) not in detail
        assert "/tmp/medlens-upload" not in detail, detail
    assert post(client, png_bytes(), model="nope").status_code == 404  # type: ignore[attr-defined]
    no_field = client.post("/v1/models/chest2d/predict", headers=AUTH, files={"other": ("a", b"x")})
    assert no_field.status_code == 400
    wrong_type = client.post("/v1/models/chest2d/predict", headers=AUTH, content=b"raw bytes")
    assert wrong_type.status_code == 415
    assert client.post("/v1/models/chest2d/predict", headers=AUTH, json=[1]).status_code == 400
    part = b'--AAA\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'
    body = part + png_bytes() + b"\r\n--AAA--\r\n"
    for kind in ("multipart/form-data; boundary=BBB", "multipart/form-data"):
        broken = client.post(
            "/v1/models/chest2d/predict", headers=AUTH | {"Content-Type": kind}, content=body
        )
        assert broken.status_code == 400, broken.text  # not a 500: the client's mistake
        assert broken.json()["detail"].startswith("malformed multipart body")


def _zip(entries: dict[str, bytes], link: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        if link:
            info = zipfile.ZipInfo(link)
            info.external_attr = 0o120777 << 16
            archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def test_raster_uploads_never_touch_the_disk(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """PNG/JPEG/TIFF bytes are decoded in memory; formats read from paths use a temp folder."""
    volume = write_image(MedicalImage(np.ones((1, 4, 4, 4), np.float32)), tmp_path / "v.nii.gz")
    png = png_bytes(3)

    def no_disk(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("an upload was written to disk")

    monkeypatch.setattr(uploads.tempfile, "TemporaryDirectory", no_disk)
    image = uploads.read_upload(png, "scan.png", Limits())
    expected = np.asarray(Image.open(io.BytesIO(png)))[None]
    np.testing.assert_array_equal(image.array, expected)
    with pytest.raises(AssertionError, match="written to disk"):
        uploads.read_upload(volume.read_bytes(), "v.nii.gz", Limits())
    monkeypatch.undo()
    assert uploads.read_upload(volume.read_bytes(), "v.nii.gz", Limits()).spatial_dims == 3
    with pytest.raises(uploads.UploadError, match=r"^scan.png: corrupt .* truncated"):
        uploads.read_upload(png[:60], "scan.png", Limits())


def test_zip_traversal_links_and_bombs_are_refused(
    models: tuple[Path, Path], tmp_path: Path
) -> None:
    with client_for(models, tmp_path, limits=Limits(max_zip_bytes=10_000)) as client:
        for name in ("../../etc/evil.dcm", "/abs/evil.dcm", "C:/windows/evil.dcm", "a/../../x.dcm"):
            response = post(client, _zip({name: b"x"}), "s.zip", model="chest3d")
            assert response.status_code == 400, name  # type: ignore[attr-defined]
            assert "outside the archive" in response.json()["detail"]  # type: ignore[attr-defined]
        linked = post(client, _zip({"a.dcm": b"x"}, link="b.dcm"), "s.zip", model="chest3d")
        assert linked.status_code == 400 and "link" in linked.json()["detail"]  # type: ignore[attr-defined]
        bomb = post(client, _zip({"big.dcm": b"\0" * 50_000}), "s.zip", model="chest3d")
        assert bomb.status_code == 413  # type: ignore[attr-defined]
    assert not list(Path("/etc").glob("evil*"))


def test_oversize_uploads_are_refused_before_decoding(
    models: tuple[Path, Path], tmp_path: Path
) -> None:
    limits = Limits(max_bytes=200_000, max_pixels=1_000_000)
    with client_for(models, tmp_path, limits=limits) as client:
        big = post(client, b"\x89PNG" + b"\0" * 300_000, "big.png")
        assert big.status_code == 413  # type: ignore[attr-defined]
        buffer = io.BytesIO()
        Image.new("L", (3000, 3000)).save(buffer, format="PNG")  # 9 MP of zeros in a few KB
        assert len(buffer.getvalue()) < 100_000
        bomb = post(client, buffer.getvalue(), "bomb.png")
        assert bomb.status_code == 413  # type: ignore[attr-defined]
        assert "decodes to more than" in bomb.json()["detail"]  # type: ignore[attr-defined]


def test_reading_by_reference_stays_inside_allowed_folders(
    client: TestClient, allowed: Path, tmp_path: Path
) -> None:
    ok = client.post(
        "/v1/models/chest2d/predict", headers=AUTH, json={"path": str(allowed / "scan.png")}
    )
    assert ok.status_code == 200 and ok.json()["prediction"]
    outside = tmp_path / "secret.png"
    outside.write_bytes(png_bytes(9))
    (allowed / "escape.png").symlink_to(outside)
    for path in (str(outside), str(allowed / "escape.png"), str(allowed / ".." / "secret.png")):
        response = client.post("/v1/models/chest2d/predict", headers=AUTH, json={"path": path})
        assert response.status_code == 403, path
    missing = client.post(
        "/v1/models/chest2d/predict", headers=AUTH, json={"path": str(allowed / "no.png")}
    )
    assert missing.status_code == 404
    # a MetaImage header's data file must lie inside the allowed folders too
    voxels = bytes(range(256)) * 2
    (allowed / "inside.raw").write_bytes(voxels)
    (tmp_path / "secret.raw").write_bytes(voxels)
    meta = "ObjectType = Image\nNDims = 3\nDimSize = 8 8 8\nElementType = MET_UCHAR\n"
    for name, target, status in (
        ("ok.mhd", "inside.raw", 200),
        ("out.mhd", str(tmp_path / "secret.raw"), 403),
        ("up.mhd", "../secret.raw", 403),
    ):
        (allowed / name).write_text(f"{meta}ElementDataFile = {target}\n")
        response = client.post(
            "/v1/models/chest3d/predict", headers=AUTH, json={"path": str(allowed / name)}
        )
        assert response.status_code == status, (name, response.text)


def test_reference_reading_is_off_by_default(models: tuple[Path, Path], tmp_path: Path) -> None:
    with client_for(models, tmp_path) as client:
        response = client.post(
            "/v1/models/chest2d/predict", headers=AUTH, json={"path": "/etc/hosts"}
        )
        assert response.status_code == 403 and "--allow-dir" in response.json()["detail"]


def test_concurrent_requests_are_batched_and_each_gets_its_own_result(
    models: tuple[Path, Path], tmp_path: Path
) -> None:
    images = [png_bytes(seed) for seed in range(24)]
    with client_for(models, tmp_path, batch_window_ms=50.0) as client:
        alone = [post(client, data).json()["calibrated_probabilities"] for data in images]  # type: ignore[attr-defined]
        service = client.app.state.models["chest2d"]  # type: ignore[attr-defined]
        before = service.batcher.batches
        with ThreadPoolExecutor(12) as pool:
            together = list(
                pool.map(lambda d: post(client, d).json()["calibrated_probabilities"], images)
            )  # type: ignore[attr-defined]
        assert service.batcher.batches - before < len(images), "no request shared a batch"
    for a, b in zip(alone, together, strict=True):
        assert a == pytest.approx(b, abs=1e-5)


def test_full_queue_answers_503_with_retry_after(models: tuple[Path, Path], tmp_path: Path) -> None:
    release = threading.Event()

    def slow(batch: np.ndarray) -> np.ndarray:
        release.wait(10)
        return np.zeros((len(batch), 2), np.float32)

    batcher = DynamicBatcher(slow, max_batch=1, window_s=0, max_queue=1)
    first = batcher.submit(np.zeros((1, 4), np.float32))  # taken by the worker, which blocks
    deadline = 0
    while batcher.depth and deadline < 100:
        threading.Event().wait(0.01)
        deadline += 1
    batcher.submit(np.zeros((1, 4), np.float32))  # fills the queue
    with pytest.raises(QueueFullError):
        batcher.submit(np.zeros((1, 4), np.float32))
    release.set()
    assert first.result(5).shape == (2,)
    batcher.close()

    with client_for(models, tmp_path) as client:
        service = client.app.state.models["chest2d"]  # type: ignore[attr-defined]

        def full(_grid: object) -> object:
            raise QueueFullError

        service.submit = full
        response = post(client, png_bytes())
        assert response.status_code == 503  # type: ignore[attr-defined]
        assert response.headers["retry-after"] == "1"  # type: ignore[attr-defined]


def test_audit_log_metrics_and_no_identifiers(models: tuple[Path, Path], tmp_path: Path) -> None:
    with client_for(models, tmp_path) as client:
        post(client, png_bytes(), "Doe_John_1950.png")
        post(client, b"junk", "Doe_John_1950.png")
        client.get("/v1/models", headers={"Authorization": "Bearer wrong-token-000000000"})
        text = client.get("/metrics", headers=AUTH).text
    lines = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [line["status"] for line in lines] == [200, 422]
    assert all(line["token"] == token_id(TOKEN) for line in lines)
    raw = (tmp_path / "audit.jsonl").read_text()
    assert TOKEN not in raw and "Doe" not in raw
    assert all(len(line["input_sha256"]) == 64 and line["latency_ms"] >= 0 for line in lines)
    assert 'medlens_requests_total{route="predict",model="chest2d",status="200"} 1' in text
    assert "medlens_queue_depth" in text and "medlens_request_seconds_bucket" in text


def test_cors_is_off_unless_asked(models: tuple[Path, Path], tmp_path: Path) -> None:
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    with client_for(models, tmp_path) as client:
        response = client.options("/v1/models/chest2d/predict", headers=preflight)
        assert "access-control-allow-origin" not in response.headers
    with client_for(models, tmp_path, cors_origins=("https://pacs.example",)) as client:
        ok = client.options(
            "/v1/models/chest2d/predict",
            headers={**preflight, "Origin": "https://pacs.example"},
        )
        assert ok.headers["access-control-allow-origin"] == "https://pacs.example"


def test_tokens_come_from_a_file_or_the_environment(tmp_path: Path) -> None:
    file = tmp_path / "tokens"
    file.write_text(f"# ward A\n{TOKEN}\n\n{TOKEN}-second\n")
    assert load_tokens(file) == (TOKEN, f"{TOKEN}-second")
    assert load_tokens(None, {"MEDLENS_API_TOKENS": f"{TOKEN},{TOKEN}x"}) == (TOKEN, f"{TOKEN}x")
    with pytest.raises(ConfigError, match="no API tokens"):
        load_tokens(None, {})
    with pytest.raises(ConfigError, match="shorter than 16"):
        load_tokens(None, {"MEDLENS_API_TOKENS": "short"})
    assert TOKEN not in token_id(TOKEN)


def test_worker_settings_travel_without_the_tokens(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKEN + "\n")
    settings = ServeSettings(
        model_dirs=(tmp_path / "m",),
        tokens=(TOKEN,),
        allowed_dirs=(tmp_path,),
        limits=Limits(max_bytes=1234),
        precision="int8",
        cors_origins=("https://viewer.example",),
        audit_log=tmp_path / "audit.jsonl",
        metrics_dir=tmp_path / "metrics",
    )
    text = settings.to_config(tokens)
    assert TOKEN not in text
    assert ServeSettings.from_config(text) == settings
    with pytest.raises(ConfigError, match="token"):
        ServeSettings.from_config(settings.to_config(None), environ={})


def test_metrics_of_all_workers_are_summed(tmp_path: Path) -> None:
    from medlens.serving.telemetry import Metrics, SharedMetrics, render

    here = Metrics()
    here.observe("predict", "m", 200, 0.02)
    shared = SharedMetrics(tmp_path, lambda: here.snapshot({"m": 3}, {"m": (2, 5)}), 60)
    other = Metrics()
    other.observe("predict", "m", 200, 0.3)
    other.observe("predict", "m", 422, 0.001)
    # a worker that has exited (no such process): its requests count, its queue does not
    (tmp_path / "999999999.json").write_text(json.dumps(other.snapshot({"m": 7}, {"m": (1, 1)})))
    text = render(shared.collect())
    shared.close()
    assert 'medlens_requests_total{route="predict",model="m",status="200"} 2' in text
    assert 'medlens_requests_total{route="predict",model="m",status="422"} 1' in text
    assert 'medlens_request_seconds_count{route="predict",model="m"} 3' in text
    assert 'medlens_request_seconds_bucket{route="predict",model="m",le="0.025"} 2' in text
    assert 'medlens_queue_depth{model="m"} 3' in text
    assert 'medlens_batches_total{model="m"} 3' in text


def test_a_run_names_its_model_for_urls(tmp_path: Path) -> None:
    from medlens.training.run import model_name

    assert model_name(tmp_path / "pneumonia") == "pneumonia"
    assert model_name(tmp_path / "my run (2)") == "my-run-2"
    assert model_name(Path("/")) is None  # the architecture's name then


def test_audit_lines_reach_stderr_once(capsys: pytest.CaptureFixture[str]) -> None:
    """`medlens serve` without --audit-log: one line per request, not one more from the root
    handler the CLI installs."""
    import logging

    from medlens.serving.telemetry import AuditLog, audit_to_stderr

    audit = logging.getLogger("medlens.audit")
    saved = (audit.handlers[:], audit.propagate, audit.level)
    root_handler = logging.StreamHandler()  # what the CLI's logging.basicConfig installs
    logging.getLogger().addHandler(root_handler)
    audit.handlers.clear()
    try:
        audit_to_stderr()
        AuditLog(None).write(route="predict", status=200)
        assert capsys.readouterr().err.count('"route": "predict"') == 1
    finally:
        logging.getLogger().removeHandler(root_handler)
        audit.handlers[:], audit.propagate = saved[0], saved[1]
        audit.setLevel(saved[2])


def test_explanations_are_warmed_in_the_background(
    models: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A fresh service builds its torch members and runs one explanation after start-up, for
    2D and 3D models, so the first explain request does not pay for them."""
    from medlens.serving.service import ModelService

    settings = ServeSettings(model_dirs=models, tokens=(TOKEN,), onnx_cache=tmp_path / "onnx")
    for folder in models:
        service = ModelService(folder, settings)
        service.warming.join(timeout=60)
        assert service.artifact._members is not None  # built by the warm-up, not a request
        service.close()
    assert "warming up" not in caplog.text  # the explanation itself ran
    cold = ModelService(models[0], dataclasses.replace(settings, warm_explanations=False))
    assert not cold.warming.is_alive() and cold.artifact._members is None
    cold.close()
