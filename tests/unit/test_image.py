from __future__ import annotations

import numpy as np
import pytest

from medlens.data.synthetic import rotation_matrix
from medlens.errors import DataError
from medlens.io import ImageMeta, MedicalImage, lps_to_ras, ras_to_lps


def test_affine_maps_index_to_world() -> None:
    direction = rotation_matrix((10, 20, 30))
    img = MedicalImage(
        np.zeros((1, 4, 5, 6)), spacing=(2.0, 0.5, 0.25), origin=(1, 2, 3), direction=direction
    )
    index = np.array([3, 1, 2, 1.0])
    expected = np.array([1, 2, 3]) + direction @ (np.array([2.0, 0.5, 0.25]) * index[:3])
    np.testing.assert_allclose((img.affine @ index)[:3], expected)


def test_from_affine_round_trip_3d() -> None:
    img = MedicalImage(
        np.zeros((1, 3, 4, 5)),
        spacing=(1.5, 0.7, 0.9),
        origin=(-5, 6, 7),
        direction=rotation_matrix((5, -40, 12)),
    )
    back = MedicalImage.from_affine(img.array, img.affine)
    np.testing.assert_allclose(back.affine, img.affine, atol=1e-12)
    assert back.spacing == pytest.approx(img.spacing)


def test_2d_direction_gets_right_handed_normal() -> None:
    direction = np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=float)  # axis0 along z? columns
    img = MedicalImage(np.zeros((1, 3, 3)), direction=direction)
    np.testing.assert_allclose(img.direction[:, 2], np.cross(direction[:, 0], direction[:, 1]))


def test_lps_ras_conversion_is_an_involution() -> None:
    aff = np.arange(16, dtype=float).reshape(4, 4)
    np.testing.assert_allclose(ras_to_lps(lps_to_ras(aff)), aff)
    assert lps_to_ras(np.eye(4))[0, 0] == -1


def test_orientation_codes() -> None:
    assert MedicalImage(np.zeros((1, 2, 2, 2))).orientation() == "LPS"
    flipped = np.diag([-1.0, -1.0, 1.0])
    assert MedicalImage(np.zeros((1, 2, 2, 2)), direction=flipped).orientation() == "RAS"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"array": np.zeros((4, 4))},
        {"array": np.zeros((1, 4, 4)), "spacing": (0.0, 1.0)},
        {"array": np.zeros((1, 4, 4)), "spacing": (1.0,)},
        {"array": np.zeros((1, 4, 4)), "direction": np.eye(2)},
    ],
)
def test_invalid_geometry_is_refused(kwargs: dict) -> None:
    with pytest.raises(DataError):
        MedicalImage(**kwargs)


def test_meta_json_round_trip_keeps_unknown_keys() -> None:
    meta = ImageMeta(modality="CT", window_center=40.0, window_width=400.0, extra={"a": 1})
    assert ImageMeta.from_json(meta.to_json()) == meta
    assert ImageMeta.from_json('{"modality": "MR", "vendor": "x"}').extra == {"vendor": "x"}
