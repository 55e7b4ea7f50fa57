from __future__ import annotations

import pytest
import torch

from medlens.errors import ConfigError
from medlens.transforms.augment import BatchAugment

FULL = {
    "rotate_deg": 20,
    "scale": 0.15,
    "translate": 0.1,
    "elastic_alpha": 0.02,
    "gamma": 0.3,
    "brightness": 0.1,
    "contrast": 0.2,
    "noise_std": 0.05,
    "blur_sigma": 1.0,
}


def _batch(nd: int, n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    size = (24,) * nd
    masks = torch.zeros(n, 1, *size, dtype=torch.int64)
    region = (slice(None), slice(None)) + (slice(6, 15),) * nd
    masks[region] = 1
    images = masks.float() + 0.01 * torch.rand(
        n, 1, *size, generator=torch.Generator().manual_seed(9)
    )
    return images, masks


@pytest.mark.parametrize("nd", [2, 3])
def test_same_seed_same_batch_and_different_seed_differs(nd: int) -> None:
    aug = BatchAugment(spatial_dims=nd, flip_axes=tuple(range(nd)), **FULL)
    images, masks = _batch(nd)
    a = aug(images, masks, generator=torch.Generator().manual_seed(1))
    b = aug(images, masks, generator=torch.Generator().manual_seed(1))
    c = aug(images, masks, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)  # type: ignore[arg-type]
    assert not torch.equal(a.images, c.images)


@pytest.mark.parametrize("nd", [2, 3])
def test_identity_at_neutral_parameters(nd: int) -> None:
    images, masks = _batch(nd)
    out = BatchAugment(spatial_dims=nd)(images, masks, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.images, images)
    assert torch.equal(out.masks, masks)  # type: ignore[arg-type]


@pytest.mark.parametrize("nd", [2, 3])
def test_masks_follow_images(nd: int) -> None:
    aug = BatchAugment(
        spatial_dims=nd, flip_axes=(0,), rotate_deg=30, scale=0.2, translate=0.1, elastic_alpha=0.02
    )
    images, masks = _batch(nd)
    out = aug(images, masks, generator=torch.Generator().manual_seed(3))
    assert out.masks is not None and out.masks.dtype == masks.dtype
    agreement = ((out.images > 0.5) == (out.masks > 0)).float().mean()
    assert agreement > 0.97
    assert not torch.equal(out.masks, masks)


def test_flip_is_exact() -> None:
    images, masks = _batch(2, n=1)
    images[0, 0, 0, 0] = 5.0
    aug = BatchAugment(spatial_dims=2, flip_axes=(1,), flip_prob=1.0)
    out = aug(images, masks, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.images, torch.flip(images, dims=(3,)))


@pytest.mark.parametrize("nd", [2, 3])
def test_boxes_follow_images(nd: int) -> None:
    images, masks = _batch(nd, n=2)
    boxes = [torch.tensor([[6.0] * nd + [15.0] * nd]) for _ in range(2)]
    aug = BatchAugment(spatial_dims=nd, flip_axes=(0,), rotate_deg=10, translate=0.1)
    out = aug(images, masks, boxes, generator=torch.Generator().manual_seed(4))
    assert out.boxes is not None and out.masks is not None
    for b in range(2):
        coords = torch.nonzero(out.masks[b, 0])
        mask_box = torch.cat([coords.min(0).values.float(), coords.max(0).values.float() + 1])
        torch.testing.assert_close(out.boxes[b][0], mask_box, atol=1.0, rtol=0)


def test_box_moved_out_of_view_becomes_nan() -> None:
    images, _ = _batch(2, n=1)
    aug = BatchAugment(spatial_dims=2, translate=0.9, prob=1.0)
    boxes = [torch.tensor([[0.0, 0.0, 2.0, 2.0]])]
    outs = [
        aug(images, boxes=boxes, generator=torch.Generator().manual_seed(s)).boxes[0]
        for s in range(20)
    ]  # type: ignore[index]
    assert any(torch.isnan(o).all() for o in outs)


def test_bad_configuration() -> None:
    with pytest.raises(ConfigError):
        BatchAugment(spatial_dims=4)
    with pytest.raises(ConfigError):
        BatchAugment(spatial_dims=2, flip_axes=(2,))
    with pytest.raises(ConfigError, match="batch"):
        BatchAugment(spatial_dims=3)(torch.zeros(2, 1, 8, 8), generator=torch.Generator())
