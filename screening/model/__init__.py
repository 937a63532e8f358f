"""Liver and spleen segmentation: residual 3-D U-Net, sliding-window inference, training."""

from screening.model.backends import (
    DEFAULT_MODEL,
    Backend,
    Liver3mmBackend,
    UNetBackend,
    load_backend,
    model_kind,
    segmentation_producer,
)
from screening.model.checkpoint import DEMO_MODEL_DIR, LoadedModel, load_model, save_model
from screening.model.inference import (
    InferenceConfig,
    SegmentationResult,
    dice_per_label,
    keep_largest_component,
    predict_probabilities,
    resolve_device,
    segment_volume,
)
from screening.model.network import LABELS, NetworkConfig, build_network
from screening.model.segment import SegmentSummary, segment_store, segment_stores
from screening.model.train import TrainConfig, TrainResult, train

__all__ = [
    "DEFAULT_MODEL",
    "DEMO_MODEL_DIR",
    "LABELS",
    "Backend",
    "InferenceConfig",
    "Liver3mmBackend",
    "LoadedModel",
    "NetworkConfig",
    "SegmentSummary",
    "SegmentationResult",
    "TrainConfig",
    "TrainResult",
    "UNetBackend",
    "build_network",
    "dice_per_label",
    "keep_largest_component",
    "load_backend",
    "load_model",
    "model_kind",
    "predict_probabilities",
    "resolve_device",
    "save_model",
    "segment_store",
    "segment_stores",
    "segment_volume",
    "segmentation_producer",
    "train",
]
