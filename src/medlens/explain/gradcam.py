"""Class activation maps (Grad-CAM, Grad-CAM++) of any medlens model.

Written with one forward hook and ``torch.autograd.grad`` instead of MONAI's ``GradCAM``: on
this repository's small-input models (feature maps of 1-2 voxels, ceil-mode pools, DenseNet's
final ReLU) MONAI's version raised shape errors or returned constant maps scaled above 1, and
backward hooks break on in-place activations. A constant map here stays all zeros.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from medlens.errors import ConfigError
from medlens.models.base import MedlensModel

CAM_METHODS = ("gradcam", "gradcam++")


def _weights(activation: torch.Tensor, grad: torch.Tensor, method: str) -> torch.Tensor:
    dims = tuple(range(2, activation.dim()))
    if method == "gradcam":
        return grad.mean(dim=dims, keepdim=True)
    # Grad-CAM++ (Chattopadhay et al. 2018), closed form for an exponential of the score
    g2, g3 = grad**2, grad**3
    denominator = 2 * g2 + activation.sum(dim=dims, keepdim=True) * g3
    alpha = g2 / torch.where(denominator != 0, denominator, torch.ones_like(denominator))
    return (alpha * F.relu(grad)).sum(dim=dims, keepdim=True)


def _normalise(cam: torch.Tensor) -> torch.Tensor:
    flat = cam.flatten(1)
    low, high = flat.min(dim=1).values, flat.max(dim=1).values
    span = (high - low).clamp_min(1e-12)
    scaled = (flat - low[:, None]) / span[:, None]
    scaled[high - low <= 1e-12] = 0.0  # a constant map carries no localisation
    return scaled.view_as(cam)


def cam_maps(
    model: MedlensModel,
    images: torch.Tensor,
    *,
    method: str = "gradcam",
    class_index: int | None = None,
    layer: str | None = None,
) -> NDArray[np.float32]:
    """Maps (N, *spatial) in [0, 1] at the input resolution, for ``class_index`` (default: the
    predicted class of each image), taken at ``layer`` (default: the model's target layer)."""
    if method not in CAM_METHODS:
        raise ConfigError(f"unknown CAM method {method!r}; use {list(CAM_METHODS)}")
    target = layer or model.target_layer
    try:
        module = model.get_submodule(target)
    except AttributeError:
        raise ConfigError(f"model {model.name!r} has no layer {target!r}") from None
    captured: dict[str, Any] = {}
    hook = module.register_forward_hook(lambda _m, _i, out: captured.__setitem__("a", out))
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            # the input carries the gradient, so a frozen backbone (transfer learning) or a
            # model whose parameters all have requires_grad off still yields the layer's
            x = images.detach().float().requires_grad_(True)
            logits = model(x)
            if class_index is None:
                chosen = logits.argmax(dim=1)
            else:
                if not 0 <= class_index < logits.shape[1]:
                    raise ConfigError(f"class index {class_index} outside 0..{logits.shape[1] - 1}")
                chosen = torch.full((len(x),), class_index, dtype=torch.long)
            activation = captured["a"]
            score = logits.gather(1, chosen[:, None].to(logits.device)).sum()
            (grad,) = torch.autograd.grad(score, activation)
    finally:
        hook.remove()
        model.train(was_training)
    cam = F.relu((_weights(activation, grad, method) * activation).sum(dim=1, keepdim=True))
    mode = "bilinear" if cam.dim() == 4 else "trilinear"
    cam = F.interpolate(cam.detach(), size=tuple(x.shape[2:]), mode=mode, align_corners=False)
    out: NDArray[np.float32] = _normalise(cam)[:, 0].cpu().numpy().astype(np.float32)
    return out
