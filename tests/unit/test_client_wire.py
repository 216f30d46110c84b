"""The client's pure parts: records as the API takes them, refusals traced to their records, the
outbox, the retry timing, and the dataset columns it expects."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from service.client._wire import LabelloopError, Outbox, Retry, event, prediction, refused_indexes
from service.client.frames import COLUMNS
from service.store.dataset import DATASET_COLUMNS


def test_the_client_knows_the_dataset_columns() -> None:
    assert COLUMNS == DATASET_COLUMNS


def test_records_are_stamped_when_logged_and_drop_what_is_unset() -> None:
    before = datetime.now(UTC)
    record = prediction("p", "recsys", model="m", features=None)
    assert set(record) == {"prediction_id", "use_case", "served_at", "model"}
    assert datetime.fromisoformat(record["served_at"]) >= before
    assert event("e", "p", "click", occurred_at="2026-01-01T00:00:00Z")["occurred_at"] == "2026-01-01T00:00:00Z"
    with pytest.raises(ValueError, match="naive"):
        prediction("p", "recsys", served_at=datetime(2026, 1, 1))


def test_refusals_name_records_by_position_or_by_id() -> None:
    batch = [{"event_id": "a"}, {"event_id": "b"}, {"event_id": "c"}]
    by_position = LabelloopError(
        "422", 422, {"detail": [{"loc": ["body", "events", 1, "type"], "field": "events[1].type", "msg": "unknown"}]}
    )
    assert refused_indexes("events", by_position, batch) == {1: "events[1].type: unknown"}
    by_id = LabelloopError(
        "409", 409, {"detail": [{"loc": ["body", "event_id"], "field": "event_id", "msg": "x", "ids": ["c"]}]}
    )
    assert list(refused_indexes("events", by_id, batch)) == [2]
    assert refused_indexes("events", LabelloopError("413", 413, "too large"), batch) == {}


def test_the_outbox_batches_predictions_first_and_puts_failures_back_in_front() -> None:
    outbox = Outbox(batch_size=2, capacity=10)
    outbox.add("events", [{"n": 1}], now=0.0)
    outbox.add("predictions", [{"n": 2}, {"n": 3}, {"n": 4}], now=1.0)
    assert outbox.due(now=0.0, interval=1.0)  # four waiting: over the batch size
    batches = outbox.take()
    assert [(kind, len(b)) for kind, b in batches] == [("predictions", 2), ("predictions", 1), ("events", 1)]
    assert len(outbox) == 0
    assert outbox.oldest is None
    outbox.add("events", [{"n": 5}], now=2.0)
    outbox.put_back("events", [{"n": 1}], now=3.0)
    assert outbox.waiting["events"] == [{"n": 1}, {"n": 5}]
    assert outbox.room() == 8


def test_retry_honours_retry_after_and_backs_off_within_the_cap() -> None:
    retry = Retry(base=0.5, cap=4.0)
    assert retry.delay(0, "3") == 3.0
    assert retry.delay(0, "60") == 4.0
    assert 0.25 <= retry.delay(0, None) <= 0.5
    assert 2.0 <= retry.delay(10, "Wed, 21 Oct 2026 07:28:00 GMT") <= 4.0


def test_a_full_batch_goes_alone_and_the_rest_waits_for_its_time() -> None:
    outbox = Outbox(batch_size=2, capacity=10)
    outbox.add("events", [{"n": i} for i in range(5)], now=0.0)
    assert outbox.full()
    assert not outbox.expired(now=0.5, interval=1.0)
    assert [len(b) for _, b in outbox.take(whole_batches_only=True)] == [2, 2]
    assert outbox.waiting["events"] == [{"n": 4}]
    assert outbox.expired(now=1.0, interval=1.0)  # the one left keeps its age
