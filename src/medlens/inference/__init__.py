"""Artifacts, prediction on files, ONNX export."""

from medlens.inference.artifact import Artifact, load_artifact, save_artifact

__all__ = ["Artifact", "load_artifact", "save_artifact"]
