"""Run one task per item with a bounded number in flight, yielding results as they finish.

Dask does not throttle submissions itself (and not resource-restricted tasks at all,
dask/distributed#9164), so the loop keeps at most ``max_in_flight`` futures and submits the
next item as each one completes. Heavy arrays never travel here: tasks return small records.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["Outcome", "run_bounded"]

T = TypeVar("T")


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """One finished item: its result, or the exception the task raised (or worker loss)."""

    item: T
    result: Any = None
    error: BaseException | None = None


def run_bounded(
    client: Any,
    fn: Callable[..., Any],
    items: Iterable[T],
    *,
    key: Callable[[T], str],
    max_in_flight: int,
    args: tuple[Any, ...] = (),
) -> Iterator[Outcome[T]]:
    """Submit ``fn(item, *args)`` per item, at most ``max_in_flight`` at a time.

    ``key(item)`` names the task; it must not contain patient identifiers (use the scan_id).
    Task exceptions (and ``KilledWorker``) are returned in :class:`Outcome`, never raised, so
    one bad item cannot stop the rest.
    """
    from distributed import as_completed

    pending = iter(items)
    owner: dict[str, T] = {}

    def submit_next(ac: Any) -> bool:
        for item in pending:
            future = client.submit(fn, item, *args, key=key(item), pure=False)
            owner[future.key] = item
            ac.add(future)
            return True
        return False

    ac = as_completed()
    for _ in range(max(1, max_in_flight)):
        if not submit_next(ac):
            break
    for future in ac:
        item = owner.pop(future.key)
        if future.status == "finished":
            outcome: Outcome[T] = Outcome(item, result=future.result())
        else:
            outcome = Outcome(item, error=future.exception())
        future.release()
        submit_next(ac)
        yield outcome
