"""Running work on Dask: cluster construction, the per-scan tasks and the streaming run."""

from screening.engine.cluster import ClusterConfig, open_client
from screening.engine.run import RunConfig, RunProgress, RunSummary, run_cohort
from screening.engine.sink import compact_results
from screening.engine.stream import Outcome, run_bounded

__all__ = [
    "ClusterConfig",
    "Outcome",
    "RunConfig",
    "RunProgress",
    "RunSummary",
    "compact_results",
    "open_client",
    "run_bounded",
    "run_cohort",
]
