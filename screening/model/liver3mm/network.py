"""PyTorch port of pyliverlesionseg 0.3's whole-liver CT/MR U-Net (3 mm grid, sigmoid).

The original is a Keras 2.2 graph built by ``architectures/unet_generalized.py``
(``create_unet_like_model``) with the hyper-parameters of
``cnn_liver_lesion_seg_CT_MR_functions.py::unet_liver_predict`` (Apache-2.0, KU Leuven). This
module re-implements that one configuration, layer for layer:

- four levels, 3× max-pooling between them (size factors 1, 3, 9, 27);
- two convolutions per level on the way down and up, kernels (3, 3, 1) then (3, 3, 3) down,
  (3, 3, 3) then (3, 3, 1) up, ``same`` padding; features 20/40, 40/80, 80/160, 160/160 down
  and 160/80, 80/40, 40/20 up;
- before every convolution but the first: parameter-free instance normalisation over the whole
  segment, ``(x - mean) / (std + 1e-7)`` per channel, then LeakyReLU(0.01);
- "linear" up-sampling (Keras: copy ×3, then a 3-wide average pool with ``valid`` padding),
  which is exactly trilinear interpolation with aligned corners onto ``3 n - 2`` voxels;
- the skip path cropped symmetrically to the up path and concatenated before it;
- a final normalisation, LeakyReLU and 1×1×1 convolution with a sigmoid (liver probability).

Axes are the original's: ``(N, 1, X, Y, Z)`` with X toward the patient's right and Y toward
anterior (RAS; the adapter in :mod:`screening.model.liver3mm.inference` brings the scan store's
LPS ``(z, y, x)`` volumes to it). Every side must be a multiple of 27; the output loses 13
voxels on each side (input 189 × 162 × 162 → output 163 × 136 × 136, the original's segment).
Equality with the original graph is checked by ``scripts/liver3mm/``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = [
    "CONV_NAMES",
    "INPUT_SEGMENT_XYZ",
    "OUTPUT_MARGIN",
    "OUTPUT_SEGMENT_XYZ",
    "SIZE_DIVISOR",
    "build_liver3mm_network",
    "output_shape",
]

#: The original's inference segment (x, y, z) at 3 mm: 567 × 486 × 486 mm in, 489 × 408 × 408 out.
INPUT_SEGMENT_XYZ: tuple[int, int, int] = (189, 162, 162)
OUTPUT_SEGMENT_XYZ: tuple[int, int, int] = (163, 136, 136)
#: Voxels lost on each side of every axis (valid average pools after each 3× up-sampling).
OUTPUT_MARGIN = 13
SIZE_DIVISOR = 27

# (name, kernel (x, y, z), in, out) in the order of the Keras graph (HDF5 conv3d_1 … conv3d_15).
_CONVS: tuple[tuple[str, tuple[int, int, int], int, int], ...] = (
    ("conv1", (3, 3, 1), 1, 20),
    ("conv2", (3, 3, 3), 20, 40),
    ("conv3", (3, 3, 1), 40, 40),
    ("conv4", (3, 3, 3), 40, 80),
    ("conv5", (3, 3, 1), 80, 80),
    ("conv6", (3, 3, 3), 80, 160),
    ("conv7", (3, 3, 3), 160, 160),
    ("conv8", (3, 3, 3), 160, 160),
    ("conv9", (3, 3, 3), 320, 160),
    ("conv10", (3, 3, 1), 160, 80),
    ("conv11", (3, 3, 3), 160, 80),
    ("conv12", (3, 3, 1), 80, 40),
    ("conv13", (3, 3, 3), 80, 40),
    ("conv14", (3, 3, 1), 40, 20),
    ("conv15", (1, 1, 1), 20, 1),
)
CONV_NAMES: tuple[str, ...] = tuple(c[0] for c in _CONVS)
_EPS = 1e-7  # Keras' K.epsilon(), added to the standard deviation (not the variance)


def output_shape(input_xyz: tuple[int, ...]) -> tuple[int, int, int]:
    """Output size for an input size (each side a multiple of 27)."""
    for n in input_xyz:
        if n < SIZE_DIVISOR or n % SIZE_DIVISOR:
            raise ValueError(f"every input side must be a multiple of 27, got {input_xyz}")
    out = tuple(n - 2 * OUTPUT_MARGIN for n in input_xyz)
    return (out[0], out[1], out[2])


def build_liver3mm_network() -> torch.nn.Module:
    """A fresh network (random weights); load the converted state dict into it."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    def norm_act(x: torch.Tensor) -> torch.Tensor:
        var, mean = torch.var_mean(x, dim=(2, 3, 4), keepdim=True, unbiased=False)
        return F.leaky_relu((x - mean) / (var.sqrt() + _EPS), 0.01)

    def up3(x: torch.Tensor) -> torch.Tensor:
        size = [3 * n - 2 for n in x.shape[2:]]
        return F.interpolate(x, size=size, mode="trilinear", align_corners=True)

    def crop_to(skip: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        c = [(a - b) // 2 for a, b in zip(skip.shape[2:], like.shape[2:], strict=True)]
        return skip[
            :,
            :,
            c[0] : skip.shape[2] - c[0],
            c[1] : skip.shape[3] - c[1],
            c[2] : skip.shape[4] - c[2],
        ]

    class Liver3mmUNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for name, k, cin, cout in _CONVS:
                pad = (k[0] // 2, k[1] // 2, k[2] // 2)
                self.add_module(name, nn.Conv3d(cin, cout, k, padding=pad))

        def _pair(self, x: torch.Tensor, a: str, b: str, *, first: bool = False) -> torch.Tensor:
            conv_a: nn.Module = getattr(self, a)
            conv_b: nn.Module = getattr(self, b)
            x = conv_a(x if first else norm_act(x))
            out: torch.Tensor = conv_b(norm_act(x))
            return out

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            l1 = self._pair(x, "conv1", "conv2", first=True)
            l2 = self._pair(F.max_pool3d(l1, 3), "conv3", "conv4")
            l3 = self._pair(F.max_pool3d(l2, 3), "conv5", "conv6")
            h = self._pair(F.max_pool3d(l3, 3), "conv7", "conv8")
            for skip, a, b in ((l3, "conv9", "conv10"), (l2, "conv11", "conv12")):
                h = up3(h)
                h = self._pair(torch.cat([crop_to(skip, h), h], dim=1), a, b)
            h = up3(h)
            h = self._pair(torch.cat([crop_to(l1, h), h], dim=1), "conv13", "conv14")
            head: nn.Module = getattr(self, "conv15")  # noqa: B009 (typed: Module, not Tensor)
            return torch.sigmoid(head(norm_act(h)))

    return Liver3mmUNet()
