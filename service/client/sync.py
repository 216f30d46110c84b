"""The blocking client: the asyncio client run on an event loop of its own, in a daemon thread,
so that batching and retries happen in the background of a synchronous app."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Coroutine, Iterable, Iterator, Mapping
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

from service.client._wire import Receipt, env_settings
from service.client.aio import AsyncClient, AsyncDataset

T = TypeVar("T")
CHUNK = 1000  # dataset rows handed from the loop thread at a time
_DONE = object()


class Client:
    """The same calls as AsyncClient, blocking; see there for batching, retries and refusals."""

    def __init__(self, url: str | None = None, api_key: str | None = None, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="labelloop-client", daemon=True)
        self._thread.start()
        kwargs = {**({"url": url} if url else {}), "api_key": api_key, **options}

        async def make() -> AsyncClient:
            return AsyncClient(**kwargs)

        self._client = self._call(make())

    @classmethod
    def from_env(cls, **options: Any) -> Client:
        """URL and key from LABELLOOP_URL and LABELLOOP_API_KEY."""
        return cls(**{**env_settings(), **options})

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result()

    def log_prediction(self, prediction_id: str, use_case: str, **fields: Any) -> None:
        self._call(self._client.log_prediction(prediction_id, use_case, **fields))

    def log_predictions(self, records: Iterable[Mapping[str, Any]]) -> None:
        self._call(self._client.log_predictions(list(records)))

    def log_event(self, event_id: str, prediction_id: str, type: str, **fields: Any) -> None:
        self._call(self._client.log_event(event_id, prediction_id, type, **fields))

    def log_events(self, records: Iterable[Mapping[str, Any]]) -> None:
        self._call(self._client.log_events(list(records)))

    def send_predictions(self, records: Iterable[Mapping[str, Any]]) -> Receipt:
        return self._call(self._client.send_predictions(list(records)))

    def send_events(self, records: Iterable[Mapping[str, Any]]) -> Receipt:
        return self._call(self._client.send_events(list(records)))

    def flush(self) -> None:
        self._call(self._client.flush())

    def get(self, path: str, **params: Any) -> Any:
        return self._call(self._client.get(path, **params))

    def delete(self, path: str) -> Any:
        return self._call(self._client.delete(path))

    def iter_dataset(self, use_case: str, since: int = 0, final_only: bool = False, **filters: Any) -> Dataset:
        return Dataset(self, self._client.iter_dataset(use_case, since, final_only, **filters))

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        try:
            self._call(self._client.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()


class Dataset:
    """Rows as dicts in seq order; `.last_seq` is where to resume."""

    def __init__(self, client: Client, rows: AsyncDataset) -> None:
        self._client = client
        self._rows = rows

    @property
    def last_seq(self) -> int:
        return self._rows.last_seq

    def __iter__(self) -> Iterator[dict[str, Any]]:
        chunks: queue.Queue[Any] = queue.Queue(maxsize=4)  # bounded: a slow reader holds the stream back
        stop = threading.Event()

        async def pump() -> None:
            chunk: list[dict[str, Any]] = []
            try:
                async for row in self._rows:
                    chunk.append(row)
                    if len(chunk) >= CHUNK:
                        await asyncio.to_thread(chunks.put, chunk)
                        chunk = []
                        if stop.is_set():
                            return
                await asyncio.to_thread(chunks.put, chunk)
                await asyncio.to_thread(chunks.put, _DONE)
            except BaseException as exc:
                await asyncio.to_thread(chunks.put, exc)

        pumping = asyncio.run_coroutine_threadsafe(pump(), self._client._loop)
        try:
            while (item := chunks.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                yield from item
        finally:
            stop.set()
            while not pumping.done():  # let a pump blocked on a full queue finish
                with contextlib.suppress(queue.Empty):
                    chunks.get(timeout=0.1)

    def rows(self) -> list[dict[str, Any]]:
        return list(self)

    def to_pandas(self) -> Any:
        from service.client.frames import to_pandas

        return to_pandas(self.rows())

    def to_arrow(self) -> Any:
        from service.client.frames import to_arrow

        return to_arrow(self.rows())
