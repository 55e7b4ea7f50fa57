"""Training: prepared data, the resumable training loop, schedules."""

from medlens.training.data import PreparedData, prepare_data
from medlens.training.trainer import Trainer, TrainResult, build_model, pick_device

__all__ = ["PreparedData", "TrainResult", "Trainer", "build_model", "pick_device", "prepare_data"]
