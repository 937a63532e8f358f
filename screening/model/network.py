"""The paper's network family: a residual 3-D U-Net with PReLU and batch norm (MONAI ``UNet``).

MONAI's ``UNet`` with ``num_res_units > 0``, ``act="PRELU"`` and ``norm="BATCH"`` is exactly the
residual U-Net the paper describes (encoder-decoder with skip connections, residual units in every
level). Using it rather than a hand-written copy means MONAI-format state dicts load directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from screening.config import FrozenConfig, require
from screening.errors import ModelFileError

if TYPE_CHECKING:
    import torch

__all__ = ["ARCHITECTURES", "LABELS", "NetworkConfig", "build_network"]

#: Output classes in channel order; the same labels as the scan store's ``seg``.
LABELS: dict[int, str] = {0: "background", 1: "liver", 2: "spleen"}
ARCHITECTURES = ("monai.UNet",)


@dataclass(frozen=True, kw_only=True)
class NetworkConfig(FrozenConfig):
    """Hyper-parameters of the residual U-Net.

    Parameters
    ----------
    channels
        Feature channels per level, top to bottom.
    strides
        Down-sampling factor between consecutive levels (one fewer than ``channels``).
    num_res_units
        Residual units per block (>= 1: the paper's network is residual).
    dropout
        Dropout probability inside the units.
    """

    architecture: str = "monai.UNet"
    in_channels: int = 1
    out_channels: int = len(LABELS)
    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 2
    act: str = "PRELU"
    norm: str = "BATCH"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        require(
            self.architecture in ARCHITECTURES,
            f"unknown architecture {self.architecture!r}; this version knows {ARCHITECTURES}",
        )
        require(self.in_channels >= 1, f"in_channels must be >= 1, got {self.in_channels}")
        require(self.out_channels >= 2, f"out_channels must be >= 2, got {self.out_channels}")
        require(
            len(self.channels) >= 2 and all(c >= 1 for c in self.channels),
            f"channels needs >= 2 positive levels, got {self.channels}",
        )
        require(
            len(self.strides) == len(self.channels) - 1,
            f"strides needs one entry per down-sampling ({len(self.channels) - 1} for "
            f"channels {self.channels}), got {self.strides}",
        )
        require(all(s in (1, 2) for s in self.strides), f"strides must be 1 or 2: {self.strides}")
        require(self.num_res_units >= 1, "num_res_units must be >= 1 (a residual U-Net)")
        require(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        require(self.act in ("PRELU", "RELU", "LEAKYRELU"), f"unsupported act {self.act!r}")
        require(self.norm in ("BATCH", "INSTANCE"), f"unsupported norm {self.norm!r}")

    @property
    def size_divisor(self) -> int:
        """Every input side must be a multiple of this (the product of the strides)."""
        return math.prod(self.strides)


def build_network(cfg: NetworkConfig) -> torch.nn.Module:
    """A fresh (randomly initialised) network for ``cfg``."""
    if cfg.architecture != "monai.UNet":  # pragma: no cover - guarded by __post_init__
        raise ModelFileError(f"unknown architecture {cfg.architecture!r}")
    from monai.networks.nets import UNet

    return UNet(
        spatial_dims=3,
        in_channels=cfg.in_channels,
        out_channels=cfg.out_channels,
        channels=cfg.channels,
        strides=cfg.strides,
        num_res_units=cfg.num_res_units,
        act=cfg.act,
        norm=cfg.norm,
        dropout=cfg.dropout,
    )
