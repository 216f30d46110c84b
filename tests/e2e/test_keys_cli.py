"""`labelloop keys` against a running `labelloop serve`, as an operator closes a fresh install."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import T0
from tests.e2e._process import serve
from tests.e2e.test_cli import Database, run_cli, throwaway_db

__all__ = ["throwaway_db"]  # the fixture, used here by name

PREDICTION = {"prediction_id": "P1", "use_case": "recsys", "served_at": T0.isoformat()}


def eventually(what: str, probe: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def status(http: httpx.Client, token: str | None = None) -> int:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return http.post("/v1/predictions", json=PREDICTION, headers=headers).status_code


async def test_a_key_created_beside_a_running_server_closes_it(tmp_path: Path) -> None:
    with serve(tmp_path, auth_refresh="100ms") as server, httpx.Client(base_url=server.base_url) as http:
        assert status(http) == 202
        assert "the API is open to anyone" in server.stderr.read_text()

        created = await run_cli("keys", "create", "--name", "web-app", "--scope", "ingest", cwd=tmp_path)
        assert created.returncode == 0, created.stderr
        token = created.stdout.split()[0]
        key_id = token.split("_")[1]
        eventually("the server requires a key", lambda: status(http) == 401)
        assert status(http, token) == 202

        listed = await run_cli("keys", "list", cwd=tmp_path)
        assert f"{key_id}  web-app  ingest" in listed.stdout
        assert token.split("_", 2)[2] not in listed.stdout  # never the secret

        revoked = await run_cli("keys", "revoke", key_id, cwd=tmp_path)
        assert revoked.returncode == 0, revoked.stderr
        eventually("the revoked key is refused", lambda: status(http, token) == 401)
        assert "revoked" in (await run_cli("keys", "list", cwd=tmp_path)).stdout
    again = await run_cli("keys", "revoke", key_id, cwd=tmp_path)
    assert again.returncode == 1
    assert "no active key" in again.stderr


@pytest.mark.postgres
async def test_keys_on_an_unmigrated_database_say_what_to_do(tmp_path: Path, throwaway_db: Database) -> None:
    refused = await run_cli("keys", "list", cwd=tmp_path, database_url=throwaway_db.url)
    assert refused.returncode == 2
    assert "labelloop migrate" in refused.stderr
    assert (await run_cli("migrate", cwd=tmp_path, database_url=throwaway_db.url)).returncode == 0
    created = await run_cli(
        "keys", "create", "--name", "ops", "--scope", "ops", cwd=tmp_path, database_url=throwaway_db.url
    )
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("ll_")


async def test_an_unknown_scope_is_a_usage_error(tmp_path: Path) -> None:
    refused = await run_cli("keys", "create", "--name", "x", "--scope", "everything", cwd=tmp_path)
    assert refused.returncode == 2
    assert "invalid choice: 'everything'" in refused.stderr
    assert not (tmp_path / "labelloop.db").exists()


async def test_a_provisioning_step_writes_the_key_to_a_file_once(tmp_path: Path) -> None:
    target = tmp_path / "prometheus.key"
    args = ("keys", "create", "--name", "prometheus", "--scope", "ops", "--output", str(target))
    first = await run_cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    token = target.read_text().strip()
    assert token.startswith("ll_")
    assert token not in first.stdout
    assert target.stat().st_mode & 0o777 == 0o640
    again = await run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert target.read_text().strip() == token
    assert (await run_cli("keys", "list", cwd=tmp_path)).stdout.count("prometheus") == 1
