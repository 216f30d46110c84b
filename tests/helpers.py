"""A small driver for label timelines through the HTTP API, in event time."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx

from service.api.runtime import Runtime
from tests.conftest import FakeClock


def iso(t: datetime) -> str:
    return t.isoformat()


class Timeline:
    """Posts predictions and events and reads labels back, through the public API."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        runtime: Runtime,
        clock: FakeClock,
        use_case: str = "recsys",
        live: bool = True,
    ):
        """live: each record arrives when it happens (the clock follows event time); otherwise the
        clock stays where it is, as in a backfill of old records."""
        self.client = client
        self.runtime = runtime
        self.clock = clock
        self.use_case = use_case
        self.live = live
        self._events = 0
        self._last_post = clock.now

    async def _arrive(self, at: datetime) -> None:
        if self.live:
            if at - self._last_post >= self.runtime.settings.idle_timeout:
                # The stream was quiet: the background sweeper would have run meanwhile.
                self.clock.set(max(self.clock.now, at))
                await self.runtime.tick()
            self.clock.set(max(self.clock.now, at))
        self._last_post = self.clock.now

    async def predict(self, prediction_id: str, served_at: datetime, **fields: Any) -> httpx.Response:
        body = {"prediction_id": prediction_id, "use_case": self.use_case, "served_at": iso(served_at), **fields}
        await self._arrive(served_at)
        response = await self.client.post("/v1/predictions", json=body)
        assert response.status_code == 202, response.text
        return response

    async def event(
        self,
        prediction_id: str,
        type: str,
        occurred_at: datetime,
        value: Any = None,
        actor: str | None = None,
        event_id: str | None = None,
    ) -> httpx.Response:
        self._events += 1
        body: dict[str, Any] = {
            "event_id": event_id or f"{prediction_id}-{type}-{self._events}",
            "prediction_id": prediction_id,
            "type": type,
            "occurred_at": iso(occurred_at),
        }
        if value is not None:
            body["value"] = value
        if actor is not None:
            body["actor"] = actor
        await self._arrive(occurred_at)
        response = await self.client.post("/v1/events", json=body)
        assert response.status_code == 202, response.text
        return response

    async def advance_watermark(self, to: datetime) -> None:
        """Let the stream go quiet until the idle watermark reaches `to`, then sweep."""
        settings = self.runtime.settings
        quiet = self._last_post + settings.idle_timeout  # idle long enough for the wall clock to stand in
        self.clock.set(max(self.clock.now, to + settings.allowed_disorder, quiet))
        await self.runtime.tick()

    async def lineage(self, prediction_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/v1/predictions/{prediction_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def label(self, prediction_id: str) -> dict[str, Any] | None:
        label: dict[str, Any] | None = (await self.lineage(prediction_id))["label"]
        return label

    async def metrics(self) -> dict[str, Any]:
        response = await self.client.get("/v1/metrics/feedback-loop", params={"use_case": self.use_case})
        assert response.status_code == 200, response.text
        figures: dict[str, Any] = response.json()["use_cases"][self.use_case]
        return figures


MIN = timedelta(minutes=1)
