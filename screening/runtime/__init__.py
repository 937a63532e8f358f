"""Where tasks run: the Dask cluster (embedded or deployed), and bounded streaming of tasks.

Stages submit work through this layer; it knows nothing of scans or models.
"""

from screening.runtime.client import open_client
from screening.runtime.cluster import ClusterConfig
from screening.runtime.stream import Outcome, run_bounded

__all__ = ["ClusterConfig", "Outcome", "open_client", "run_bounded"]
