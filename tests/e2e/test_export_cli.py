"""`labelloop export` as a real process against a live `labelloop serve`: JSONL, CSV and Parquet
files equal to what the dataset endpoint answers, incremental with --since, final only on demand."""

from __future__ import annotations

import csv
import io
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from service.client import Client
from tests.e2e._process import Server, clean_env, labelloop_command, serve
from tests.e2e.test_client import clicks, predictions


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("export")
    with serve(workdir, database_url=f"sqlite+aiosqlite:///{workdir / 'labelloop.db'}") as server:
        with Client(server.base_url) as client:
            client.log_predictions(predictions(40, prefix="X", features={"position": 2, "query": 'a "quoted", text'}))
            client.log_events(clicks([f"X{i}" for i in range(25)]))
        yield server


def served_rows(server: Server, **params: Any) -> list[dict[str, Any]]:
    response = httpx.get(f"{server.base_url}/v1/datasets/recsys", params=params)
    return [json.loads(line) for line in response.text.splitlines()]


def run_export(server: Server, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*labelloop_command(), "export", *args],
        cwd=tmp_path,
        env=clean_env(url=server.base_url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def export(server: Server, tmp_path: Path, *args: str) -> tuple[Path, str]:
    out = tmp_path / "out"
    result = run_export(server, tmp_path, "recsys", "-o", str(out), *args)
    assert result.returncode == 0, result.stderr
    return out, result.stdout


def test_jsonl_equals_the_dataset_and_says_where_to_resume(server: Server, tmp_path: Path) -> None:
    out, said = export(server, tmp_path)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    expected = served_rows(server)
    assert rows == expected
    assert len(rows) == 25
    assert f"25 rows written to {out}; next time: --since {expected[-1]['seq']}" in said
    assert not list(tmp_path.glob(".out*"))  # no partial file left


def test_csv_equals_the_api_csv(server: Server, tmp_path: Path) -> None:
    out, _ = export(server, tmp_path, "--format", "csv")
    api = httpx.get(f"{server.base_url}/v1/datasets/recsys", params={"format": "csv"}).text
    assert list(csv.reader(io.StringIO(out.read_text()))) == list(csv.reader(io.StringIO(api)))


def test_parquet_holds_the_rows_and_since_pulls_only_what_changed(server: Server, tmp_path: Path) -> None:
    out, _ = export(server, tmp_path, "--format", "parquet")
    table = pq.read_table(out)
    expected = served_rows(server)
    assert table.column("prediction_id").to_pylist() == [r["prediction_id"] for r in expected]
    assert table.column("label").to_pylist() == [float(r["label"]) for r in expected]
    assert json.loads(table.column("features")[0].as_py()) == expected[0]["features"]
    last = expected[-1]["seq"]

    with Client(server.base_url) as client:
        client.log_events(clicks(["X30", "X31"]))
    newer, said = export(server, tmp_path, "--since", str(last))
    assert [json.loads(line)["prediction_id"] for line in newer.read_text().splitlines()] == ["X30", "X31"]
    assert f"next time: --since {last + 2}" in said
    final, _ = export(server, tmp_path, "--final-only")
    assert final.read_text() == ""  # windows of 10 min: nothing final yet


def test_an_unknown_use_case_fails_with_the_reason(server: Server, tmp_path: Path) -> None:
    result = run_export(server, tmp_path, "nope", "-o", str(tmp_path / "x"))
    assert result.returncode == 1
    assert "404" in result.stderr
    assert "unknown use case" in result.stderr
    assert not (tmp_path / "x").exists()
