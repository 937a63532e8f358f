"""Repeatability of the attenuation measures on repeat scans of one patient.

Bland & Altman (1996, BMJ 313:744, "Measurement error"): the within-subject standard deviation
``s_w`` is the square root of the pooled within-subject variance (the one-way ANOVA residual
mean square, which allows unequal numbers of scans per subject); the repeatability coefficient
``RC = 1.96 * sqrt(2) * s_w`` bounds the difference between two scans of one subject in 95% of
pairs; the within-subject coefficient of variation is ``s_w / mean``.

HU is an offset scale (water 0), so a CV of liver HU depends on where zero is: it is reported
because it is asked for, with that caveat; RC in HU is the number to read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
from numpy.typing import ArrayLike

__all__ = ["Repeatability", "repeatability", "repeatability_table"]


@dataclass(frozen=True)
class Repeatability:
    """Within-subject agreement of repeated measurements (HU unless stated)."""

    n_subjects: int
    n_measurements: int
    within_sd: float
    repeatability_coefficient: float
    within_cv_pct: float
    mean: float
    note: str = ""


def repeatability(subjects: Sequence[Any], values: ArrayLike) -> Repeatability:
    """Repeatability from long-form data: one value per measurement, ``subjects`` naming whose.

    Subjects with a single (non-NaN) measurement carry no within-subject information and are
    left out. Fewer than two subjects with repeats gives NaN with a note.

    >>> r = repeatability(["a", "a", "b", "b"], [40.0, 42.0, 50.0, 49.0])
    >>> round(r.within_sd, 4), r.n_subjects
    (1.118, 2)
    """
    vals = np.asarray(values, dtype=np.float64)
    groups: dict[Any, list[float]] = {}
    for subject, v in zip(subjects, vals, strict=True):
        if subject is not None and np.isfinite(v):
            groups.setdefault(subject, []).append(float(v))
    repeated = {s: np.asarray(v) for s, v in groups.items() if len(v) >= 2}
    n_meas = sum(len(v) for v in repeated.values())
    if len(repeated) < 2:
        nan = float("nan")
        note = f"{len(repeated)} subject(s) with repeat scans: at least 2 are needed"
        return Repeatability(len(repeated), n_meas, nan, nan, nan, nan, note)
    ss_within = sum(float(((v - v.mean()) ** 2).sum()) for v in repeated.values())
    df_within = n_meas - len(repeated)
    within_sd = float(np.sqrt(ss_within / df_within))
    grand = float(np.mean(np.concatenate(list(repeated.values()))))
    cv = 100.0 * within_sd / abs(grand) if grand != 0 else float("nan")
    return Repeatability(
        n_subjects=len(repeated),
        n_measurements=n_meas,
        within_sd=within_sd,
        repeatability_coefficient=1.96 * np.sqrt(2.0) * within_sd,
        within_cv_pct=cv,
        mean=grand,
        note="CV of HU depends on the HU zero (water); read the RC in HU",
    )


def repeatability_table(
    values: pa.Table,
    *,
    subject_col: str = "patient_pseudo_id",
    methods: Mapping[str, str] | None = None,
) -> pa.Table:
    """One row per method from a table with one row per scan (``subject_col`` plus the
    method columns; the caller keeps only scans that may be compared, e.g. status ok, no
    contrast, and repeat pairs of the same study)."""
    methods = methods or {
        "ai_3d": "liver_hu_3d",
        "ai_2d": "liver_hu_2d",
        "ai_roi": "liver_hu_roi",
        "ai_3d_eroded": "liver_hu_3d_eroded",
    }
    subjects = values[subject_col].to_pylist()
    rows = []
    for method, column in methods.items():
        data = values[column].to_numpy(zero_copy_only=False).astype(np.float64)
        rows.append({"method": method, **asdict(repeatability(subjects, data))})
    return pa.Table.from_pylist(rows)
