"""The label state of open predictions, kept by the writer that owns them.

A writer that is alone in writing a set of predictions (the API process in embedded mode) never
needs to read back what it wrote: the phase, the current label and the counted events of every
prediction whose label is not final yet are already in its memory. The store stays the source of
truth. This is a bounded cache of it: a prediction evicted for room, or never seen since start-up,
is read from the store as before; a final one is dropped, since it never changes again.

A unit of work checks predictions out as copies and mutates only those; its caller publishes them
after the commit, and never after a failure, so what is cached is always what was committed.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from service.core.labels import CurrentLabel
from service.core.model import Evidence, Phase
from service.core.windows import Deadlines, PartitionProgress
from service.store.stats import served_hour


@dataclass(slots=True)
class OpenPrediction:
    """The part of a stored prediction that labeling reads and writes."""

    prediction_id: str
    use_case: str
    served_at: datetime
    deadline: Deadlines
    phase: Phase
    current: CurrentLabel | None
    feedback_delay_s: float | None
    seq: int | None
    stored_phase: Phase
    # Its counted events, or None while they are known only to the store.
    evidence: list[Evidence] | None = None
    touched: bool = False  # a new counted event or a phase change: resolve again
    needs_seq: bool = False  # the dataset row changed: label or status
    # Where its label counts in model quality ('' for no model or version); score None: not scored.
    model: str = ""
    model_version: str = ""
    score: float | None = None

    hour: int = field(init=False)  # served_hour(served_at), which every count of it asks for

    def __post_init__(self) -> None:
        self.hour = served_hour(self.served_at)

    def copy(self) -> OpenPrediction:
        """An independent copy (dataclasses.replace costs five times as much)."""
        return OpenPrediction(
            self.prediction_id,
            self.use_case,
            self.served_at,
            self.deadline,
            self.phase,
            self.current,
            self.feedback_delay_s,
            self.seq,
            self.stored_phase,
            None if self.evidence is None else list(self.evidence),
            self.touched,
            self.needs_seq,
            self.model,
            self.model_version,
            self.score,
        )


class OpenPredictions:
    """At most `capacity` open predictions, least recently used evicted first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[str, OpenPrediction] = OrderedDict()
        self.watermark: PartitionProgress | None = None  # the embedded watermark, as committed
        # True: the store holds no orphan event, as a tick last found it; a unit that stores one
        # sets it False at once. New predictions then skip looking for events that waited for them.
        self.orphans_absent = False

    def __len__(self) -> int:
        return len(self._entries)

    def checkout(self, prediction_id: str) -> OpenPrediction | None:
        """A copy to work on, or None when only the store knows it."""
        entry = self._entries.get(prediction_id)
        if entry is None:
            return None
        self._entries.move_to_end(prediction_id)
        return entry.copy()

    def publish(self, committed: Iterable[OpenPrediction]) -> None:
        """The predictions of a committed unit of work, as that unit left them."""
        for pred in committed:
            if pred.phase is Phase.FINAL:
                self._entries.pop(pred.prediction_id, None)
                continue
            self._entries[pred.prediction_id] = pred
            self._entries.move_to_end(pred.prediction_id)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget everything: after a failure whose outcome in the store is unknown."""
        self._entries.clear()
        self.watermark = None
        self.orphans_absent = False
