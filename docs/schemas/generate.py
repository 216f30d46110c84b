"""Write the JSON Schemas of Kafka message contract v1 (docs/kafka-contract.md) from the pydantic
models in service/contract.py plus the two envelope fields service/kafka/codec.py reads.

    .venv/bin/python docs/schemas/generate.py          # rewrite the files
    .venv/bin/python docs/schemas/generate.py --check  # exit 1 if a file is out of date

tests/deploy/test_contract_schema.py fails when a committed file differs from what this writes."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DRAFT = "https://json-schema.org/draft/2020-12/schema"

ENVELOPE: dict[str, dict[str, Any]] = {
    "schema_version": {
        "const": 1,
        "type": "integer",
        "default": 1,
        "description": "Contract version. Absent means 1; any other value sends the message to the dead-letter topic.",
        "title": "Schema Version",
    },
    "received_at": {
        "anyOf": [{"format": "date-time", "type": "string"}, {"type": "null"}],
        "default": None,
        "description": (
            "RFC 3339 with offset: when the record reached labelloop (the API sets it). "
            "Absent: the Kafka message timestamp stands in."
        ),
        "title": "Received At",
    },
}


def _message_schema(model: Any, title: str, topic: str, time_field: str) -> dict[str, Any]:
    generated = model.model_json_schema()
    schema: dict[str, Any] = {
        "$schema": DRAFT,
        "title": title,
        "description": (
            f"One JSON object per Kafka message on {topic} (the topic name is a setting); "
            f"key: prediction_id as UTF-8. Contract version 1. When {time_field} is absent, "
            "received_at, else the message timestamp, stands in for it. See docs/kafka-contract.md."
        ),
    }
    schema.update({k: v for k, v in generated.items() if k not in ("title", "description")})
    schema["properties"] = {**generated["properties"], **copy.deepcopy(ENVELOPE)}
    return schema


def schemas() -> dict[str, dict[str, Any]]:
    """File name -> schema."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from service.config import Settings
    from service.contract import EventIn, PredictionIn

    fields = Settings.model_fields
    return {
        "prediction.v1.json": _message_schema(
            PredictionIn,
            "labelloop prediction message, v1",
            str(fields["kafka_predictions_topic"].default),
            "served_at",
        ),
        "event.v1.json": _message_schema(
            EventIn, "labelloop event message, v1", str(fields["kafka_events_topic"].default), "occurred_at"
        ),
    }


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    stale = []
    for name, schema in schemas().items():
        path = HERE / name
        text = render(schema)
        if path.exists() and path.read_text() == text:
            continue
        if "--check" in argv:
            stale.append(name)
        else:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print(f"out of date: {', '.join(stale)}; run python docs/schemas/generate.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
