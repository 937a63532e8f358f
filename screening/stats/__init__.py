"""Population statistics over the results: prevalence with confidence intervals, segmentation
agreement, attenuation agreement with readers, classification with bootstrap CIs,
repeatability; ``compute_stats`` writes them all (``screening stats``)."""

from screening.stats.agreement import agreement_table, icc_2_1, pair_agreement, reader_matrix
from screening.stats.classification import (
    auc,
    bootstrap_classification,
    classification_table,
    confusion,
    grade_roc_table,
    reference_standard_truth,
    roc_band,
    roc_points,
)
from screening.stats.compute import StatsConfig, StatsSummary, compute_stats
from screening.stats.prevalence import (
    DECISION_COLUMNS,
    age_standardised,
    format_prevalence,
    prevalence_all,
    prevalence_table,
    wilson_interval,
)
from screening.stats.reads import load_reference_reads
from screening.stats.repeatability import repeatability, repeatability_table
from screening.stats.segmentation import (
    segmentation_metrics,
    segmentation_table,
    summarise_segmentation,
)

__all__ = [
    "DECISION_COLUMNS",
    "StatsConfig",
    "StatsSummary",
    "age_standardised",
    "agreement_table",
    "auc",
    "bootstrap_classification",
    "classification_table",
    "compute_stats",
    "confusion",
    "format_prevalence",
    "grade_roc_table",
    "icc_2_1",
    "load_reference_reads",
    "pair_agreement",
    "prevalence_all",
    "prevalence_table",
    "reader_matrix",
    "reference_standard_truth",
    "repeatability",
    "repeatability_table",
    "roc_band",
    "roc_points",
    "segmentation_metrics",
    "segmentation_table",
    "summarise_segmentation",
    "wilson_interval",
]
