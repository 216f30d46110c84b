"""Dataset rows as a pandas DataFrame or an Arrow table (the `dataframes` extra)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

# Free-form columns whose shape varies from row to row: JSON text in Arrow, which needs one type
# per column (pandas keeps them as dicts).
JSON_COLUMNS = ("features", "output", "sources")
COLUMNS = (  # as the API sends them (service/store/dataset.py DATASET_COLUMNS)
    "prediction_id",
    "model",
    "model_version",
    "served_at",
    "subject_id",
    "features",
    "output",
    "label",
    "label_kind",
    "status",
    "sources",
    "feedback_delay_s",
    "revision",
    "seq",
    "p_flip",
)


def arrow_schema() -> Any:
    import pyarrow as pa

    text, number = pa.string(), pa.float64()
    return pa.schema(
        [
            ("prediction_id", text),
            ("model", text),
            ("model_version", text),
            ("served_at", pa.timestamp("us", tz="UTC")),
            ("subject_id", text),
            ("features", text),
            ("output", text),
            ("label", number),  # binary 0/1 and regression values alike
            ("label_kind", text),
            ("status", text),
            ("sources", text),
            ("feedback_delay_s", number),
            ("revision", pa.int64()),
            ("seq", pa.int64()),
            ("p_flip", number),  # provisional implicit negatives; 0 when final, else null
        ]
    )


def _arrow_row(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for name in JSON_COLUMNS:
        if out.get(name) is not None:
            out[name] = orjson.dumps(out[name]).decode()
    if out.get("served_at") is not None:
        out["served_at"] = datetime.fromisoformat(out["served_at"])
    return out


def to_arrow(rows: list[dict[str, Any]]) -> Any:
    try:
        import pyarrow as pa
    except ImportError as exc:
        raise ImportError("to_arrow needs pyarrow: pip install 'labelloop[dataframes]'") from exc
    return pa.Table.from_pylist([_arrow_row(r) for r in rows], schema=arrow_schema())


def to_pandas(rows: list[dict[str, Any]]) -> Any:
    try:
        import pandas as pd
    except ImportError as exc:
        raise ImportError("to_pandas needs pandas: pip install 'labelloop[dataframes]'") from exc
    frame = pd.DataFrame.from_records(rows, columns=list(COLUMNS))
    frame["served_at"] = pd.to_datetime(frame["served_at"], utc=True, format="ISO8601")
    return frame
