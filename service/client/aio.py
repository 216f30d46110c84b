"""The asyncio client: records batched in the background and sent with retries, and the dataset
streamed with resumption from the last seq."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from types import TracebackType
from typing import Any

import httpx

from service.client._wire import (
    DEFAULT_URL,
    PATHS,
    RETRIED_STATUSES,
    Kind,
    LabelloopError,
    Outbox,
    Receipt,
    Rejected,
    Retry,
    Undelivered,
    auth_headers,
    dataset_row,
    encode_batch,
    env_settings,
    error,
    event,
    prediction,
    receipt,
    refused_indexes,
)

JSON_HEADERS = {"Content-Type": "application/json"}


class AsyncClient:
    """log_* queue records; a background task sends them once `batch_size` wait or the oldest has
    waited `flush_interval` seconds. At most `max_buffered` records wait: beyond that, log_* sends
    before it returns (memory stays bounded when the server is slower than the app). flush() sends
    everything and raises Undelivered for what could not be delivered; close() flushes and stops.

    503, 429, 502, 504 and connection errors are retried with backoff (honouring Retry-After):
    safe, since ids make every write idempotent. A record the server refuses (422 naming it, 409)
    is set aside and the rest of its batch sent again."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        max_buffered: int = 100_000,
        retry: Retry | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=url, headers=auth_headers(api_key), timeout=timeout, transport=transport
        )
        self._outbox = Outbox(batch_size, max(max_buffered, batch_size))
        self._interval = flush_interval
        self._retry = retry or Retry()
        self._wake = asyncio.Event()
        self._sending = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._rejected: list[Rejected] = []
        self._failure: str | None = None

    @classmethod
    def from_env(cls, **options: Any) -> AsyncClient:
        """URL and key from LABELLOOP_URL and LABELLOOP_API_KEY."""
        return cls(**{**env_settings(), **options})

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        await self.close()

    # --- logging ------------------------------------------------------------------------------

    async def log_prediction(self, prediction_id: str, use_case: str, **fields: Any) -> None:
        """served_at (default: now), model, model_version, subject_id, features, output, context."""
        await self._queue("predictions", [prediction(prediction_id, use_case, **fields)])

    async def log_predictions(self, records: Iterable[Mapping[str, Any]]) -> None:
        await self._queue("predictions", [prediction(**r) for r in records])

    async def log_event(self, event_id: str, prediction_id: str, type: str, **fields: Any) -> None:
        """occurred_at (default: now), value, actor, payload."""
        await self._queue("events", [event(event_id, prediction_id, type, **fields)])

    async def log_events(self, records: Iterable[Mapping[str, Any]]) -> None:
        await self._queue("events", [event(**r) for r in records])

    async def flush(self) -> None:
        """Send everything waiting; Undelivered names what was refused or is still failing."""
        await self._send_waiting()
        rejected, self._rejected = self._rejected, []
        if rejected or len(self._outbox):
            raise Undelivered(rejected, len(self._outbox), self._failure)

    async def close(self) -> None:
        try:
            await self.flush()
        finally:
            if self._task is not None:
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
            await self._http.aclose()

    # --- direct sends ---------------------------------------------------------------------------

    async def send_predictions(self, records: Iterable[Mapping[str, Any]]) -> Receipt:
        """One request now, retried as above; raises LabelloopError on a refusal."""
        return await self._post("predictions", [prediction(**r) for r in records])

    async def send_events(self, records: Iterable[Mapping[str, Any]]) -> Receipt:
        return await self._post("events", [event(**r) for r in records])

    # --- reading --------------------------------------------------------------------------------

    def iter_dataset(self, use_case: str, since: int = 0, final_only: bool = False, **filters: Any) -> AsyncDataset:
        """The dataset's rows changed after `since`, in seq order; `.last_seq` is where to resume."""
        params = {"since": since, "final_only": str(final_only).lower(), **filters}
        return AsyncDataset(self._http, use_case, params, self._retry)

    async def get(self, path: str, **params: Any) -> Any:
        """A JSON read (lineage, feedback-loop figures), retried like the writes."""
        return (await self._request("GET", path, params=params)).json()

    async def delete(self, path: str) -> Any:
        """A JSON delete (a subject's erasure), retried like the writes: erasing again erases nothing."""
        return (await self._request("DELETE", path)).json()

    # --- the machinery --------------------------------------------------------------------------

    async def _queue(self, kind: Kind, records: list[dict[str, Any]]) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="labelloop-client-flush")
        if self._outbox.room() < len(records):
            await self._send_waiting()  # full: the caller waits for room, memory stays bounded
        self._outbox.add(kind, records, time.monotonic())
        if self._outbox.due(time.monotonic(), self._interval):
            self._wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            if self._outbox.expired(time.monotonic(), self._interval):
                await self._send_waiting()
            elif self._outbox.full():
                await self._send_waiting(whole_batches_only=True)  # the rest waits for more, or its time

    async def _send_waiting(self, whole_batches_only: bool = False) -> None:
        async with self._sending:
            batches = self._outbox.take(whole_batches_only)
            for number, (kind, batch) in enumerate(batches):
                try:
                    await self._deliver(kind, batch)
                except LabelloopError as exc:  # still failing after every retry: keep it for later
                    self._failure = str(exc)
                    for later_kind, later in reversed(batches[number:]):
                        self._outbox.put_back(later_kind, later, time.monotonic())
                    return
            self._failure = None

    async def _deliver(self, kind: Kind, batch: list[dict[str, Any]]) -> None:
        """Send a batch; the records a refusal names are set aside and the rest sent again."""
        while batch:
            try:
                await self._post(kind, batch)
                return
            except LabelloopError as exc:
                if exc.status is None or exc.status in RETRIED_STATUSES:
                    raise
                named = refused_indexes(kind, exc, batch) or dict.fromkeys(range(len(batch)), str(exc))
                self._rejected += [Rejected(kind, batch[i], why) for i, why in sorted(named.items())]
                batch = [r for i, r in enumerate(batch) if i not in named]

    async def _post(self, kind: Kind, batch: list[dict[str, Any]]) -> Receipt:
        response = await self._request("POST", PATHS[kind], content=encode_batch(kind, batch), headers=JSON_HEADERS)
        return receipt(response.json())

    async def _request(self, method: str, path: str, **options: Any) -> httpx.Response:
        """A successful answer, after retries; LabelloopError for a refusal or when retries run out."""
        for attempt in range(self._retry.attempts):
            try:
                response = await self._http.request(method, path, **options)
            except httpx.TransportError as exc:
                failure, retry_after = LabelloopError(f"{method} {path}: {exc!r}"), None
            else:
                if response.status_code < 300:
                    return response
                failure = error(response.status_code, response.content, f"{method} {path}")
                if response.status_code not in RETRIED_STATUSES:
                    raise failure
                retry_after = response.headers.get("Retry-After")
            if attempt + 1 < self._retry.attempts:
                await asyncio.sleep(self._retry.delay(attempt, retry_after))
        raise failure


class AsyncDataset:
    """Rows as dicts, in seq order. A stream cut off midway resumes from the last seq it got."""

    def __init__(self, http: httpx.AsyncClient, use_case: str, params: dict[str, Any], retry: Retry) -> None:
        self._http = http
        self._path = f"/v1/datasets/{use_case}"
        self._params = params
        self._retry = retry
        self.last_seq: int = int(params["since"])

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        attempt = 0
        while True:
            try:
                async with self._http.stream("GET", self._path, params={**self._params, "since": self.last_seq}) as r:
                    if r.status_code >= 300:
                        failure = error(r.status_code, await r.aread(), f"GET {self._path}")
                        if r.status_code not in RETRIED_STATUSES:
                            raise failure
                        raise _Again(failure, r.headers.get("Retry-After"))
                    async for line in r.aiter_lines():
                        row = dataset_row(line.encode())
                        if row is not None:
                            self.last_seq = int(row["seq"])
                            attempt = 0
                            yield row
                    return
            except (httpx.TransportError, _Again) as exc:
                attempt += 1
                if attempt >= self._retry.attempts:
                    failure = exc.failure if isinstance(exc, _Again) else LabelloopError(f"GET {self._path}: {exc!r}")
                    raise failure from exc
                retry_after = exc.retry_after if isinstance(exc, _Again) else None
                await asyncio.sleep(self._retry.delay(attempt - 1, retry_after))

    async def rows(self) -> list[dict[str, Any]]:
        return [row async for row in self]

    async def to_pandas(self) -> Any:
        from service.client.frames import to_pandas

        return to_pandas(await self.rows())

    async def to_arrow(self) -> Any:
        from service.client.frames import to_arrow

        return to_arrow(await self.rows())


class _Again(Exception):
    def __init__(self, failure: LabelloopError, retry_after: str | None) -> None:
        self.failure = failure
        self.retry_after = retry_after
