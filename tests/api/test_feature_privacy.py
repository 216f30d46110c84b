"""Features a policy drops or hashes never reach the store, through the HTTP API on both engines;
a retry of the same record is still a duplicate."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from service.api.app import create_app
from service.core.policy import BUNDLED_POLICIES, PolicyError
from tests.conftest import T0, FakeClock, settings_for
from tests.helpers import iso


@pytest.fixture
def private_policies(tmp_path: Path) -> Path:
    policies = yaml.safe_load(BUNDLED_POLICIES.read_text())
    policies["use_cases"]["recsys"]["features"] = {"drop": ["email"], "hash": ["card"]}
    path = tmp_path / "policies.yaml"
    path.write_text(yaml.safe_dump(policies))
    return path


@pytest.fixture
async def client(
    engine: AsyncEngine, migrated_url: str, clock: FakeClock, private_policies: Path
) -> AsyncIterator[httpx.AsyncClient]:
    settings = settings_for(migrated_url, policies=private_policies, feature_hash_key="test-key")
    app: FastAPI = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://labelloop.test") as client:
            yield client


async def test_dropped_and_hashed_features_never_reach_the_store(client: httpx.AsyncClient) -> None:
    body = {
        "prediction_id": "P",
        "use_case": "recsys",
        "served_at": iso(T0),
        "features": {"email": "jane@example.com", "card": "4111111111111111", "position": 2},
    }
    assert (await client.post("/v1/predictions", json=body)).json() == {"accepted": 1, "duplicates": 0}
    assert (await client.post("/v1/predictions", json=body)).json() == {"accepted": 0, "duplicates": 1}
    await client.post("/v1/events", json={"event_id": "E", "prediction_id": "P", "type": "click"})
    stored = (await client.get("/v1/predictions/P")).json()["prediction"]["features"]
    assert set(stored) == {"card", "position"}
    assert stored["card"].startswith("hmac-sha256:")
    dataset = (await client.get("/v1/datasets/recsys")).text
    assert "jane@example.com" not in dataset
    assert "4111111111111111" not in dataset
    assert stored["card"] in dataset


def test_hashing_without_a_key_stops_start_up(migrated_url: str, private_policies: Path) -> None:
    with pytest.raises(PolicyError, match="LABELLOOP_FEATURE_HASH_KEY"):
        create_app(settings_for(migrated_url, policies=private_policies))
