"""A bounded FIFO that makes room by dropping its *oldest* entry."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class DropOldestQueue(Generic[T]):
    """FIFO of at most ``capacity`` items; a push into a full queue evicts the oldest.

    Trio has no drop-oldest channel, and the shim's queue lives in the sans-IO
    core anyway, so this is plain synchronous Python.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"queue capacity must be at least 1, not {capacity}")
        self.capacity = capacity
        self._items: deque[T] = deque()

    def push(self, item: T) -> T | None:
        """Append ``item``; return the evicted oldest item when the queue was full."""
        evicted = self._items.popleft() if len(self._items) >= self.capacity else None
        self._items.append(item)
        return evicted

    def pop(self) -> T | None:
        """Remove and return the oldest item, or ``None`` when empty."""
        return self._items.popleft() if self._items else None

    def drain(self) -> list[T]:
        """Remove and return every item, oldest first."""
        items = list(self._items)
        self._items.clear()
        return items

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[T]:
        return iter(self._items)
