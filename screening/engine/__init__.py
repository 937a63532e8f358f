"""Running work on Dask: cluster construction and the bounded streaming loop."""

from screening.engine.cluster import ClusterConfig, open_client
from screening.engine.stream import Outcome, run_bounded

__all__ = ["ClusterConfig", "Outcome", "open_client", "run_bounded"]
