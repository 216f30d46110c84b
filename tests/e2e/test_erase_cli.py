"""`labelloop erase` against a running `labelloop serve` with keys: only an admin key erases; the
subject's rows become tombstones in the dataset, everyone else's stay; erasing again erases nothing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx

from tests.conftest import T0
from tests.e2e._process import serve
from tests.e2e.test_cli import run_cli


async def _key(tmp_path: Path, scope: str) -> str:
    created = await run_cli("keys", "create", "--name", f"{scope}-key", "--scope", scope, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    return created.stdout.split()[0]


async def test_an_admin_key_erases_a_subject_through_the_api(tmp_path: Path) -> None:
    with serve(tmp_path, auth_refresh="100ms") as server:
        admin, ingest, read = [await _key(tmp_path, scope) for scope in ("admin", "ingest", "read")]
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            for _ in range(100):  # the server reloads its keys every 100 ms
                if (await http.get("/v1/erasures")).status_code == 401:
                    break
                await asyncio.sleep(0.05)
            for pid, subject in (("A1", "alice"), ("A2", "alice"), ("B1", "bob")):
                record = {"prediction_id": pid, "use_case": "recsys", "served_at": T0.isoformat()}
                record["subject_id"] = subject
                posted = await http.post("/v1/predictions", json=record, headers={"authorization": f"Bearer {ingest}"})
                assert posted.status_code == 202
            for pid in ("A1", "B1"):
                click = {"event_id": f"click-{pid}", "prediction_id": pid, "type": "click"}
                posted = await http.post("/v1/events", json=click, headers={"authorization": f"Bearer {ingest}"})
                assert posted.status_code == 202

            refused = await run_cli("erase", "alice", cwd=tmp_path, url=server.base_url, api_key=ingest)
            assert refused.returncode == 1
            assert "403" in refused.stderr

            erased = await run_cli("erase", "alice", cwd=tmp_path, url=server.base_url, api_key=admin)
            assert erased.returncode == 0, erased.stderr
            assert erased.stdout.startswith("erased 2 predictions, 1 events")

            again = await run_cli("erase", "alice", "--json", cwd=tmp_path, url=server.base_url, api_key=admin)
            assert again.returncode == 0, again.stderr
            assert json.loads(again.stdout)["predictions"] == 0

            dataset = await http.get("/v1/datasets/recsys", headers={"authorization": f"Bearer {read}"})
    status = {row["prediction_id"]: row["status"] for row in map(json.loads, dataset.text.splitlines())}
    assert status == {"A1": "erased", "A2": "erased", "B1": "final"}  # served at T0: every window is past
