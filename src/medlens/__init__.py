"""medlens: CNN-based medical image analysis from raw images to validated, explainable models."""

__version__ = "0.1.0"
