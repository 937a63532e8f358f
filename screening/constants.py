"""One home for the rules every layer shares: label values, the steatosis threshold, and which
measurements column each AI method's liver attenuation lives in.

>>> ORGAN_LABELS["liver"], ORGAN_LABELS["spleen"]
(1, 2)
>>> METHOD_COLUMNS["ai_roi"]
'liver_hu_roi'
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = [
    "LABEL_NAMES",
    "LIVER_LABEL",
    "METHOD_COLUMNS",
    "ORGAN_LABELS",
    "SPLEEN_LABEL",
    "STEATOSIS_THRESHOLD_HU",
]

#: Label values of every segmentation the engine writes or reads (0 is background).
LIVER_LABEL = 1
SPLEEN_LABEL = 2
#: Organ name -> label value.
ORGAN_LABELS: Mapping[str, int] = MappingProxyType({"liver": LIVER_LABEL, "spleen": SPLEEN_LABEL})
#: Label value -> name, background included (as recorded beside a ``seg`` array).
LABEL_NAMES: Mapping[int, str] = MappingProxyType(
    {0: "background", LIVER_LABEL: "liver", SPLEEN_LABEL: "spleen"}
)

#: The paper's rule: steatosis when liver attenuation is at or below 40 HU (non-contrast CT).
STEATOSIS_THRESHOLD_HU = 40.0

#: AI method name -> measurements column holding its liver attenuation (HU), in the paper's
#: order: the 3-D mean over the liver mask, the mean over 2-D slices, the ROI placed in the
#: liver (docs/methods.md).
METHOD_COLUMNS: Mapping[str, str] = MappingProxyType(
    {"ai_3d": "liver_hu_3d", "ai_2d": "liver_hu_2d", "ai_roi": "liver_hu_roi"}
)
