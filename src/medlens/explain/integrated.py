"""Integrated gradients (captum) of the class log-odds, from the blurred image as baseline."""

from __future__ import annotations

import numpy as np
import torch
from captum.attr import IntegratedGradients
from numpy.typing import NDArray
from torch import nn

from medlens.explain.scoring import blurred, chosen_classes, class_log_odds


def integrated_gradient_maps(
    model: nn.Module,
    images: torch.Tensor,
    *,
    class_index: int | None = None,
    multilabel: bool = False,
    steps: int = 32,
    batch_size: int = 64,
) -> NDArray[np.float32]:
    """Maps (N, *spatial): attributions summed over channels. They add up (to the integration
    error) to the log-odds of the image minus those of the blurred image."""
    model.eval()
    images = images.float()
    classes = chosen_classes(model, images, class_index)
    baselines = torch.from_numpy(np.stack([blurred(i) for i in images.numpy()]))
    method = IntegratedGradients(lambda x: class_log_odds(model, x, multilabel=multilabel))
    maps = []
    per_call = max(1, batch_size // steps)  # images whose interpolation paths share a pass
    for start in range(0, len(images), per_call):
        chunk = slice(start, start + per_call)
        attributions = method.attribute(
            images[chunk],
            baselines=baselines[chunk],
            target=classes[chunk],
            n_steps=steps,
            internal_batch_size=max(batch_size, len(images[chunk])),
        )
        maps.append(attributions.sum(dim=1).detach().numpy().astype(np.float32))
    out: NDArray[np.float32] = np.concatenate(maps)
    return out
