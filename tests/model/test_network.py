"""The residual U-Net: shapes on tiny networks, hyper-parameter checks, MONAI compatibility."""

from __future__ import annotations

import pytest
import torch

from screening.errors import ConfigError
from screening.model import NetworkConfig, build_network

TINY = NetworkConfig(channels=(4, 8, 16), strides=(2, 2), num_res_units=1)


@pytest.mark.parametrize("shape", [(16, 32, 32), (8, 24, 40)])
def test_output_has_one_channel_per_class_and_the_input_size(shape: tuple[int, ...]) -> None:
    net = build_network(TINY).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 1, *shape))
    assert out.shape == (2, 3, *shape)


def test_network_is_residual_with_prelu_and_batch_norm() -> None:
    net = build_network(TINY)
    names = {type(m).__name__ for m in net.modules()}
    assert {"ResidualUnit", "PReLU", "BatchNorm3d", "SkipConnection"} <= names


def test_state_dict_is_monai_format() -> None:
    from monai.networks.nets import UNet

    direct = UNet(
        3, 1, 3, channels=(4, 8, 16), strides=(2, 2), num_res_units=1, act="PRELU", norm="BATCH"
    )
    ours = build_network(TINY)
    ours.load_state_dict(direct.state_dict(), strict=True)  # raises on any mismatch
    assert ours.state_dict().keys() == direct.state_dict().keys()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"channels": (8,), "strides": ()},
        {"channels": (4, 8, 16), "strides": (2,)},
        {"strides": (2, 3, 2)},
        {"num_res_units": 0},
        {"dropout": 1.0},
        {"out_channels": 1},
        {"architecture": "SwinUNETR"},
        {"act": "GELU"},
        {"channels": (16, 0, 64, 128)},
    ],
)
def test_ill_formed_hyper_parameters_raise(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        NetworkConfig(**kwargs)


def test_size_divisor_is_the_product_of_strides() -> None:
    assert NetworkConfig(channels=(4, 8, 16, 32), strides=(2, 1, 2)).size_divisor == 4
