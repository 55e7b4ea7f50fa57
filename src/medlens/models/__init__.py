"""Networks under one contract (features, head, CAM target layer, replaceable head), 2D and 3D."""

from medlens.models import cnn, compact, densenet, resnet, vgg  # noqa: F401  (registers the models)
from medlens.models.base import MedlensModel
from medlens.models.registry import MODELS, create_model, list_models, model_from_spec
from medlens.models.transfer import load_backbone

__all__ = [
    "MODELS",
    "MedlensModel",
    "create_model",
    "list_models",
    "load_backbone",
    "model_from_spec",
]
