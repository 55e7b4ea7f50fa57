"""What every perturbation method shares: the score it explains and what "removing" means.

Occlusion and integrated gradients explain the class log-odds, log(p / (1 - p)): unlike the
probability it does not saturate, so when a confident model sees two lesions, hiding one still
shows (with probabilities both drops were ~0 and the map's maximum fell anywhere). Deletion and
insertion curves stay in probability units, as published. Removing a region means replacing it
by a blurred copy of the image: it keeps the image in distribution (a grey square is itself a
feature a CNN can react to) and is the same for every method.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray
from scipy import ndimage
from torch import nn

from medlens.errors import ConfigError


def class_probabilities(model: nn.Module, x: torch.Tensor, *, multilabel: bool) -> torch.Tensor:
    """Probabilities (N, K) of ``model`` on ``x``."""
    logits: torch.Tensor = model(x)
    return torch.sigmoid(logits) if multilabel else torch.softmax(logits, dim=1)


def class_log_odds(model: nn.Module, x: torch.Tensor, *, multilabel: bool) -> torch.Tensor:
    """Log-odds (N, K) of each class: the logit (sigmoid), or z_k - logsumexp of the others."""
    logits: torch.Tensor = model(x)
    if multilabel:
        return logits
    k = logits.shape[1]
    others = (
        logits[:, None, :].expand(-1, k, -1).masked_fill(torch.eye(k, dtype=torch.bool), -torch.inf)
    )
    return logits - torch.logsumexp(others, dim=2)


def blurred(image: NDArray[np.float32]) -> NDArray[np.float32]:
    """The image (C, *spatial) with each channel blurred by a Gaussian of sigma 1/8 of the
    smallest side: lesion-sized detail is gone, the anatomy's layout stays (1/16 left a
    6-voxel nodule visible enough for the model to keep its probability)."""
    sigma = max(1.0, min(image.shape[1:]) / 8)
    return np.stack([ndimage.gaussian_filter(c, sigma=sigma) for c in image]).astype(np.float32)


@torch.no_grad()
def chosen_classes(
    model: nn.Module, images: torch.Tensor, class_index: int | None, *, batch_size: int = 32
) -> torch.Tensor:
    """``class_index`` for every image, or each image's top-scoring class when it is None."""
    model.eval()
    logits = torch.cat(
        [model(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    )
    if class_index is None:
        return logits.argmax(dim=1)
    if not 0 <= class_index < logits.shape[1]:
        raise ConfigError(f"class index {class_index} outside 0..{logits.shape[1] - 1}")
    return torch.full((len(images),), class_index, dtype=torch.long)
