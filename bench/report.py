"""Results as a JSON file and a readable table: scenario, figure, reference, ratio, target."""

from __future__ import annotations

import json
import platform
import subprocess
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass
class Figure:
    scenario: str
    figure: str
    value: float
    unit: str
    reference: str = ""
    reference_value: float | None = None
    target: str = ""

    @property
    def ratio(self) -> float | None:
        if not self.reference_value:
            return None
        return self.value / self.reference_value


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE
        ).stdout.strip()
    except OSError:
        return "unknown"


def write(figures: list[Figure], quick: bool) -> None:
    meta = {
        "commit": _commit(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": quick,
        "machine": f"{platform.machine()}, {platform.python_version()}",
    }
    rows = [{**asdict(f), "ratio": f.ratio} for f in figures]
    (HERE / "results.json").write_text(json.dumps({"meta": meta, "figures": rows}, indent=2) + "\n")
    print(render())


def render() -> str:
    """results.md from results.json and the hand-written findings.md; returns the table."""
    results = json.loads((HERE / "results.json").read_text())
    meta = results["meta"]
    commit, date = meta["commit"], meta["date"]
    lines = [
        f"# Benchmark results ({'quick' if meta['quick'] else 'full'} run)",
        "",
        f"Commit {commit}, {date}, {meta['machine']}. Reproduce: `make bench` (or `make bench-quick`).",
        "",
        "| scenario | figure | value | reference | ratio | target | commit | date |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for f in results["figures"]:
        reference = f["reference"]
        if f["reference_value"] is not None:
            reference = f"{reference}: {f['reference_value']:,.1f}"
        ratio = f"{f['ratio']:.2f}" if f["ratio"] is not None else ""
        value = f"{f['value']:,.1f} {f['unit']}"
        lines.append(
            f"| {f['scenario']} | {f['figure']} | {value} | {reference} | {ratio} | {f['target']} | {commit} | {date} |"
        )
    table = "\n".join(lines)
    # What a table cannot say (profiles, before and after a change, targets out of reach) is
    # written by hand in findings.md and travels with every run's table.
    (HERE / "results.md").write_text(table + "\n\n" + (HERE / "findings.md").read_text())
    return table


if __name__ == "__main__":
    render()  # after editing findings.md: python -m bench.report
