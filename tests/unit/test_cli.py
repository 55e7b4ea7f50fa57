from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medlens.data.fake_dicom import SeriesSpec, write_dicom_series
from medlens.data.synthetic import write_chest_folder
from medlens.io import read_image


def test_convert_series_to_nifti_and_info(
    tmp_path: Path, ct_volume: np.ndarray, run_cli: Callable
) -> None:
    truth = write_dicom_series(
        ct_volume,
        tmp_path / "series",
        SeriesSpec(rotation_deg=(0, 20, 0), patient_id="SECRET-ID-42"),
    )
    out = tmp_path / "vol.nii.gz"
    assert run_cli("convert", str(tmp_path / "series"), str(out)).code == 0
    np.testing.assert_allclose(read_image(out).affine, truth.affine, atol=1e-4)
    info = json.loads(run_cli("info", str(tmp_path / "series"), "--json").out)
    assert info["modality"] == "CT" and "SECRET" not in json.dumps(info)
    assert "SECRET-ID-42" in run_cli("info", str(tmp_path / "series"), "--json", "--show-ids").out


def test_errors_are_one_line_without_traceback(tmp_path: Path, run_cli: Callable) -> None:
    bad = tmp_path / "scan.png"
    bad.write_text("not an image at all, sorry" * 20)
    result = run_cli("info", str(bad))
    assert result.code == 2
    assert "scan.png" in result.err and "Traceback" not in result.err
    assert len(result.err.strip().splitlines()) <= 2
    assert run_cli("convert", str(bad), str(tmp_path / "x.nii.gz")).code == 2
    assert not (tmp_path / "x.nii.gz").exists()


def test_multi_series_folder_lists_series(
    tmp_path: Path, ct_volume: np.ndarray, run_cli: Callable
) -> None:
    write_dicom_series(ct_volume, tmp_path, SeriesSpec(series_number=1))
    write_dicom_series(ct_volume, tmp_path, SeriesSpec(series_number=2))
    listing = json.loads(run_cli("info", str(tmp_path), "--json").out)
    assert len(listing["series"]) == 2
    result = run_cli("convert", str(tmp_path), str(tmp_path / "o.nii.gz"))
    assert result.code == 2 and "--series" in result.err
    assert run_cli("convert", str(tmp_path), str(tmp_path / "o.nii.gz"), "--series", "2").code == 0


def test_data_split_and_check(tmp_path: Path, run_cli: Callable) -> None:
    folder = write_chest_folder(tmp_path / "chest", 30, size=16)
    out = tmp_path / "manifest.csv"
    result = run_cli("data", "split", str(folder), "--out", str(out), "--folds", "3")
    assert result.code == 0, result.err
    assert "fold" in out.read_text().splitlines()[0]
    check = run_cli("data", "check", str(out))
    assert check.code == 0 and "no problems found" in check.out
    rows = out.read_text().splitlines()
    rows[1] = rows[1].replace(rows[1].split(",")[0], "gone.png", 1)
    out.write_text("\n".join(rows) + "\n")
    failed = run_cli("data", "check", str(out))
    assert failed.code == 1 and "missing file" in failed.out


def test_demo_offline_uses_phantoms(tmp_path: Path, run_cli: Callable, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)  # no ../shared/data from here
    monkeypatch.setenv("MEDLENS_CACHE", str(tmp_path / "cache"))
    result = run_cli("demo", "--offline", "--out", str(tmp_path / "demo"), "--budget", "15s")
    assert result.code == 0, result.err
    assert "built-in chest phantoms" in result.out and "no problems found" in result.out
    assert "AUC" in result.out, result.out  # the headline table
    assert (tmp_path / "demo/chest-phantoms/report.html").is_file()
    # one model, or an ensemble when early stopping left budget for more members (timing)
    model = tmp_path / "demo/chest-phantoms/model"
    meta = json.loads((model / "model.json").read_text())
    assert meta["name"] == "chest-phantoms"  # served as /v1/models/chest-phantoms
    members = meta["members"]
    assert members and all((model / name).is_file() for name in members)


def test_plan_for_cross_validation(tmp_path: Path, run_cli: Callable) -> None:
    folder = write_chest_folder(tmp_path / "chest", 30, size=16)
    out = tmp_path / "plan.json"
    result = run_cli("plan", str(folder), "--out", str(out), "--budget", "20s", "--folds", "3")
    assert result.code == 0, result.err
    assert json.loads(out.read_text())["folds"] == 3 and "3 fold models" in result.out
    refused = run_cli("plan", str(folder), "--out", str(tmp_path / "p1.json"), "--folds", "1")
    assert refused.code == 2 and "--folds" in refused.err
    assert not (tmp_path / "p1.json").exists()


def test_the_cli_starts_without_the_heavy_libraries() -> None:
    """`medlens --help` took 6 s when every command's libraries were imported up front; torch
    (1.4 s) and MONAI (1.7 s) load only when a command needs them, MONAI only for its networks."""
    import subprocess
    import sys

    code = (
        "import sys, medlens.cli.main\n"
        "print(sorted(m for m in ('torch', 'monai', 'onnxruntime') if m in sys.modules))\n"
        "from medlens.models import create_model\n"
        "create_model('compactnet', spatial_dims=2, in_channels=1, num_classes=2)\n"
        "print('monai' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[0] == "[]" and out[1] == "False"
