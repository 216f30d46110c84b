"""A real `labelloop serve` on SQLite whose database lives on a small tmpfs the test mounts, then
fills: under load, every answer is a 202 for what was stored or a 503 JSON with Retry-After for
what was not; /readyz fails while the disk is full, the failure is logged once, and once the
filler is gone writes succeed again without a restart. The refused records, retried, are counted
once, and the labels equal those of an undisturbed run of the same workload. The database passes
PRAGMA integrity_check afterwards.

Needs root (mount); CI runs as root, so a failed mount fails the test rather than skipping it.

Read-only is not tested here because Linux cannot produce it under a live writer:
`mount -o remount,ro` answers EBUSY while any process holds a file of the filesystem open for
writing (the kernel's sb_prepare_remount_readonly; checked on this machine with one open SQLite
connection), and `labelloop serve` holds its database and its lease file open for its lifetime.
/readyz does check the filesystem's read-only flag (service/store/database.py: disk_fault).

Time: the records' event times are three hours in the past and the idle timeout is an hour, so
no window closes while the workload runs, however the fault delays it; a last prediction served
two hours later moves the watermark past every seal, and every label is final.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.e2e._process import Server, serve

TMPFS_SIZE = "16m"
WORKERS = 4
BOUND_S = 15.0  # an answer later than this is a hang, not a slow answer
POLL_TIMEOUT_S = 15.0
FULL_FOR_S = 1.5  # the disk stays full this long under load, then as long again with no load


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs mounted for this test, unmounted whatever happened."""
    mountpoint = tmp_path / "disk"
    mountpoint.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0755", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.fail(
            f"cannot mount a tmpfs at {mountpoint} (these tests need root: CI runs them as root): "
            f"exit {mounted.returncode}: {mounted.stderr.strip()}",
            pytrace=False,
        )
    try:
        yield mountpoint
    finally:
        unmounted = subprocess.run(["umount", str(mountpoint)], capture_output=True, text=True, check=False)
        if unmounted.returncode != 0:  # still busy: detach it, the kernel frees it once closed
            subprocess.run(["umount", "-l", str(mountpoint)], check=True)


def _env(database: Path) -> dict[str, str]:
    return {
        "database_url": f"sqlite+aiosqlite:///{database}",
        "idle_timeout": "1h",  # the wall clock never stands in for the watermark during the test
        "sweep_interval": "200ms",
        "allowed_disorder": "1s",
        "log_level": "info",
    }


@dataclass(frozen=True)
class Item:
    path: str
    body: dict[str, Any]

    @property
    def key(self) -> str:
        return str(self.body.get("event_id") or self.body["prediction_id"])


def _workload(base: datetime) -> Iterator[Item]:
    """Predictions served at `base`; a click on every second one, a return after it on every sixth
    (a negative that outranks the click), no event (an implicit negative) on the others."""
    for i in itertools.count():
        pid = f"p{i:04d}"
        yield Item(
            "/v1/predictions",
            {
                "prediction_id": pid,
                "use_case": "recsys",
                "model": "ranker",
                "model_version": "7",
                "served_at": base.isoformat(),
                "subject_id": f"user:{i % 13}",
                "features": {"position": i % 10, "padding": "x" * 300},
                "output": {"item": f"sku-{i}"},
            },
        )
        if i % 2 == 0:
            occurred = (base + timedelta(minutes=1)).isoformat()
            yield Item(
                "/v1/events", {"event_id": f"click-{i}", "prediction_id": pid, "type": "click", "occurred_at": occurred}
            )
        if i % 6 == 0:
            occurred = (base + timedelta(minutes=2)).isoformat()
            yield Item(
                "/v1/events",
                {"event_id": f"return-{i}", "prediction_id": pid, "type": "return", "occurred_at": occurred},
            )


@dataclass
class Load:
    """Worker threads posting the workload in order until told to stop; every answer kept."""

    base_url: str
    items: Iterator[Item]
    sent: list[Item] = field(default_factory=list)
    answers: dict[str, httpx.Response] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _go: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._work, daemon=True) for _ in range(WORKERS)]
        for thread in self._threads:
            thread.start()

    def run(self, seconds: float | None = None, count: int | None = None) -> None:
        """Post for `seconds`, or until `count` more items have been answered."""
        target = len(self.sent) + count if count is not None else None
        self._go.set()
        deadline = time.monotonic() + (seconds if seconds is not None else POLL_TIMEOUT_S)
        while time.monotonic() < deadline and (target is None or len(self.answers) < target):
            time.sleep(0.01)
        self.pause()
        assert target is None or len(self.answers) >= target, f"only {len(self.answers)} of {target} answered"

    def resume(self) -> None:
        self._go.set()

    def pause(self) -> None:
        """Stop taking items and wait for those in flight."""
        self._go.clear()
        deadline = time.monotonic() + BOUND_S + 1
        while len(self.answers) + len(self.problems) < len(self.sent) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(self.answers) + len(self.problems) == len(self.sent), "requests still in flight"

    def stop(self) -> None:
        self._stop.set()
        self._go.set()
        for thread in self._threads:
            thread.join(timeout=BOUND_S + 1)

    def _next(self) -> Item | None:
        with self._lock:
            if not self._go.is_set() or self._stop.is_set():
                return None
            item = next(self.items)
            self.sent.append(item)
            return item

    def _work(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=BOUND_S * 2) as http:
            while not self._stop.is_set():
                if not self._go.wait(timeout=0.05):
                    continue
                item = self._next()
                if item is None:
                    continue
                started = time.monotonic()
                try:
                    response = http.post(item.path, json=item.body)
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.problems.append(f"{item.key}: {exc!r}")
                    continue
                elapsed = time.monotonic() - started
                with self._lock:
                    if elapsed > BOUND_S:
                        self.problems.append(f"{item.key}: answered after {elapsed:.1f} s")
                    self.answers[item.key] = response

    def outcome(self, status: int) -> list[Item]:
        return [item for item in self.sent if self.answers[item.key].status_code == status]


def _check_answer(item: Item, response: httpx.Response) -> None:
    """A 202 that says it stored the record, or a 503 that says nothing was."""
    if response.status_code == 202:
        assert response.json() == {"accepted": 1, "duplicates": 0}, (item.key, response.text)
        return
    assert response.status_code == 503, (item.key, response.status_code, response.text)
    assert response.headers["retry-after"] == "5", item.key
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"] == "store_unavailable", body
    assert "SQLITE_FULL" in body["detail"][0]["msg"], body


def _not_ready(http: httpx.Client) -> None:
    response = http.get("/readyz")
    assert response.status_code == 503, response.text
    assert response.json()["status"] == "unavailable"


def _poll_ready(http: httpx.Client) -> float:
    started = time.monotonic()
    while http.get("/readyz").status_code != 200:
        assert time.monotonic() - started < POLL_TIMEOUT_S, "/readyz not ready again in time"
        time.sleep(0.05)
    return time.monotonic() - started


def _fill(directory: Path) -> Path:
    """A filler file taking every free block; the disk is full once it is written."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        for size in (1 << 20, 4096, 512, 1):
            while _write(fd, size):
                pass
    finally:
        os.close(fd)
    assert os.statvfs(directory).f_bavail == 0, "the filler did not fill the disk"
    return filler


def _write(fd: int, size: int) -> bool:
    """False once the disk is full."""
    try:
        os.write(fd, b"\0" * size)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            return False
        raise
    return True


def _closer(base: datetime) -> Item:
    """A prediction served two hours later: the watermark passes every seal of the workload."""
    served = (base + timedelta(hours=2)).isoformat()
    return Item("/v1/predictions", {"prediction_id": "closer", "use_case": "recsys", "served_at": served})


def _post(http: httpx.Client, item: Item) -> None:
    response = http.post(item.path, json=item.body)
    assert response.status_code == 202, (item.key, response.text)
    assert response.json() == {"accepted": 1, "duplicates": 0}, (item.key, response.text)


# Not compared: seq, the order of commits, and revision, how often a provisional label changed on
# the way, which follows how arrivals fell into commits (a click and its return in one group commit
# are one revision, in two commits two), fault or not.
UNORDERED = ("seq", "revision")


def _final_labels(http: httpx.Client, predictions: int) -> dict[str, dict[str, Any]]:
    """Every prediction's dataset row once all are final, without what depends on commit order."""
    deadline = time.monotonic() + POLL_TIMEOUT_S
    while True:
        response = http.get("/v1/datasets/recsys")
        assert response.status_code == 200, response.text
        rows = [orjson.loads(line) for line in response.text.splitlines() if line]
        latest = {row["prediction_id"]: row for row in rows}
        if len(latest) == predictions and all(row["status"] == "final" for row in latest.values()):
            return {pid: {k: v for k, v in row.items() if k not in UNORDERED} for pid, row in latest.items()}
        assert time.monotonic() < deadline, f"{len(latest)} of {predictions} labels, not all final"
        time.sleep(0.1)


def _lineage(http: httpx.Client, prediction_id: str) -> dict[str, Any]:
    """What a prediction's lineage says that does not depend on when it was written."""
    response = http.get(f"/v1/predictions/{prediction_id}")
    assert response.status_code == 200, (prediction_id, response.text)
    body = response.json()
    last = body["history"][-1]
    return {
        "events": sorted((e["event_id"], e["type"], e["disposition"], e["reason"]) for e in body["events"]),
        "final": {k: last[k] for k in ("label", "kind", "rule", "sources", "status")},
    }


def _log(server: Server) -> list[dict[str, Any]]:
    text = server.stderr.read_text() + server.stdout.read_text()
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


def _undisturbed(workdir: Path, items: list[Item], closer: Item) -> tuple[dict[str, Any], dict[str, Any]]:
    """The same records, in the same order, on a disk with room: labels and lineages."""
    workdir.mkdir()
    with serve(workdir, **_env(workdir / "labelloop.db")) as server, httpx.Client(base_url=server.base_url) as http:
        for item in items:
            _post(http, item)
        _post(http, closer)
        pids = [i.key for i in items if i.path == "/v1/predictions"]
        return _final_labels(http, len(pids)), {pid: _lineage(http, pid) for pid in pids}


def _differences(got: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    """Per prediction, the fields that differ: (got, expected)."""
    found: dict[str, Any] = {}
    for pid in sorted(got.keys() | expected.keys()):
        a, b = got.get(pid) or {}, expected.get(pid) or {}
        fields = {k: (a.get(k), b.get(k)) for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
        if fields:
            found[pid] = fields
    return found


def test_a_full_disk_answers_503_and_recovers_without_restart(tmp_path: Path, tmpfs: Path) -> None:
    base = (datetime.now(UTC) - timedelta(hours=3)).replace(microsecond=0)
    database = tmpfs / "labelloop.db"
    with serve(tmp_path, **_env(database)) as server, httpx.Client(base_url=server.base_url, timeout=BOUND_S) as http:
        load = Load(server.base_url, _workload(base))
        load.start()
        try:
            load.run(count=60)  # before: all stored
            assert load.outcome(202) == load.sent, load.problems
            assert http.get("/readyz").status_code == 200

            filler = _fill(tmpfs)
            _not_ready(http)
            started = time.monotonic()
            load.resume()  # under load, readiness probed meanwhile
            while time.monotonic() - started < FULL_FOR_S:
                _not_ready(http)
                time.sleep(0.05)
            load.pause()
            refused = [item for item in load.sent if load.answers[item.key].status_code == 503]
            assert refused, "the full disk refused nothing"
            idle_since = time.monotonic()
            while time.monotonic() - idle_since < FULL_FOR_S:  # no load: the sweeper alone
                _not_ready(http)
                time.sleep(0.05)

            filler.unlink()
            recovered_in = _poll_ready(http)
            during = len(load.sent)
            load.run(count=60)  # after: all stored again, without a restart
            assert all(load.answers[i.key].status_code == 202 for i in load.sent[during:]), "not recovered"
        finally:
            load.stop()
        assert not load.problems, load.problems
        for item in load.sent:
            _check_answer(item, load.answers[item.key])

        # What was answered 202 is there; what was answered 503 is not: a retry stores it now.
        accepted, refused = load.outcome(202), load.outcome(503)
        assert refused, "nothing refused"
        for item in (i for i in accepted if i.path == "/v1/predictions"):
            assert http.get(f"/v1/predictions/{item.key}").status_code == 200, item.key
        for item in (i for i in refused if i.path == "/v1/predictions"):
            assert http.get(f"/v1/predictions/{item.key}").status_code == 404, item.key
            _post(http, item)  # accepted 1, duplicates 0: it had not been stored
        accepted_events = {i.key for i in accepted if i.path == "/v1/events"}
        pids = [i.key for i in load.sent if i.path == "/v1/predictions"]
        for pid in pids:  # the accepted events, orphans of a refused prediction too; no refused one
            events = {e["event_id"] for e in http.get(f"/v1/predictions/{pid}").json()["events"]}
            expected = {i.key for i in load.sent if i.path == "/v1/events" and i.body["prediction_id"] == pid}
            assert events == expected & accepted_events, pid
        for item in (i for i in refused if i.path == "/v1/events"):
            _post(http, item)
        _post(http, _closer(base))
        labels = _final_labels(http, len(pids))
        lineages = {pid: _lineage(http, pid) for pid in pids}
    log = _log(server)

    expected_labels, expected_lineages = _undisturbed(tmp_path / "undisturbed", load.sent, _closer(base))
    assert _differences(labels, expected_labels) == {}
    assert _differences(lineages, expected_lineages) == {}
    assert {row["label_kind"] for row in labels.values()} == {"behavioral", "implicit_negative"}

    # Logged once, when the fault began, not once per refused request; no traceback.
    faults = [line["msg"] for line in log if line["logger"] == "service.api.faults"]
    assert len(faults) == 1, faults
    assert "answered 503: SQLite SQLITE_FULL" in faults[0], faults
    sweeps = [line["msg"] for line in log if line["logger"] == "service.api.runtime"]
    assert len([m for m in sweeps if "failed" in m]) <= 1, sweeps
    assert "Traceback" not in server.output()

    # The database is intact and holds each prediction once.
    with contextlib.closing(sqlite3.connect(database)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("SELECT count(*) FROM predictions").fetchone() == (len(pids) + 1,)
    print(f"refused {len(refused)} of {len(load.sent)}; ready again {recovered_in:.2f} s after the filler went")
