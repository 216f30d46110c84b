"""Where accepted records go: the embedded store (committed before the 202), or Kafka (acked by
the broker before the 202, joined by `labelloop consume`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from service.core.model import EventRecord, PredictionRecord


@dataclass(frozen=True, slots=True)
class Receipt:
    accepted: int
    duplicates: int | None  # None in Kafka mode: the joiner recognises duplicates later


class Sink(Protocol):
    async def put_predictions(self, records: Sequence[PredictionRecord]) -> Receipt: ...

    async def put_events(self, records: Sequence[EventRecord]) -> Receipt: ...

    async def fault(self) -> str | None:
        """Why accepted records could not be made durable now (for /readyz), else None."""
        ...
