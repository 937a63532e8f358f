"""The cohort run: the only layer that composes the stages (preprocess -> segment -> measure)
into per-scan tasks on the runtime and streams their rows into a results folder."""

from screening.pipeline.run import RunConfig, RunProgress, RunSummary, run_cohort

__all__ = ["RunConfig", "RunProgress", "RunSummary", "run_cohort"]
