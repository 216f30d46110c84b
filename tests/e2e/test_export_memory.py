"""A dataset of large rows streams in bounded memory: the server's peak RSS grows by far less than
the rows it sends (it reads and sends them a page of LABELLOOP_DATASET_PAGE_BYTES at a time)."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import T0
from tests.e2e._process import serve

# Enough rows that the page-sized growth (8-13 MB measured, allocator noise included) is far
# below half of what is sent; with 60 rows (21 MB) that noise failed CI once.
ROWS = 150
PAGE = {"dataset_page_bytes": str(2**20)}  # without the byte budget the peak grew 153 MB (measured)
PIECE = "x" * 60_000  # three per field: ~180 KB each of features, output, context


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_large_rows_stream_in_bounded_memory(tmp_path: Path) -> None:
    field = {"a": PIECE, "b": PIECE, "c": PIECE}
    with serve(tmp_path, **PAGE) as server, httpx.Client(base_url=server.base_url, timeout=60) as http:
        for i in range(ROWS):
            record = {"prediction_id": f"p{i}", "use_case": "recsys", "served_at": T0.isoformat()}
            record |= {"features": field, "output": field, "context": field}
            assert http.post("/v1/predictions", json=record).status_code == 202
            event = {"event_id": f"c{i}", "prediction_id": f"p{i}", "type": "click"}
            assert http.post("/v1/events", json=event).status_code == 202
        before = peak_rss_mb(server.process.pid)
        sent = 0
        with http.stream("GET", "/v1/datasets/recsys") as response:
            for chunk in response.iter_bytes():
                sent += len(chunk)
        grown = peak_rss_mb(server.process.pid) - before
    sent_mb = sent / 2**20
    assert sent_mb > 15, f"the rows are large: {sent_mb:.0f} MB sent"
    # Holding the whole response (the 5,000-row page of before) would grow it by more than sent_mb.
    assert grown < sent_mb / 2, f"peak RSS grew {grown:.0f} MB while sending {sent_mb:.0f} MB"
