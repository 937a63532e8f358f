"""Population statistics over the results: prevalence with confidence intervals (more to come:
segmentation metrics, agreement, ROC with bootstrap CIs, the HTML report)."""

from screening.stats.prevalence import (
    DECISION_COLUMNS,
    format_prevalence,
    prevalence_table,
    wilson_interval,
)

__all__ = ["DECISION_COLUMNS", "format_prevalence", "prevalence_table", "wilson_interval"]
