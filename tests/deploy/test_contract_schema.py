"""docs/schemas/*.v1.json against the code: each file is exactly what docs/schemas/generate.py
derives from service.contract, and the examples in docs/kafka-contract.md and README.md are
messages that both the schemas and the joiner's codec accept."""

from __future__ import annotations

import importlib.util
import json
import re
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from service.core.model import EventRecord, PredictionRecord
from service.kafka.codec import PoisonRecord, decode_event, decode_prediction, encode

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "docs" / "schemas"
CONTRACT_DOC = ROOT / "docs" / "kafka-contract.md"
README = ROOT / "README.md"
TIMESTAMP_MS = 1_795_000_000_000  # the Kafka message timestamp the examples are decoded with


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("labelloop_schema_generator", SCHEMAS / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATOR = load_generator()
KINDS = {"prediction": "prediction.v1.json", "event": "event.v1.json"}


def schema(kind: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SCHEMAS / KINDS[kind]).read_text())
    return loaded


def decode(kind: str, message: dict[str, Any]) -> PredictionRecord | EventRecord:
    raw = json.dumps(message).encode()
    return decode_prediction(raw, TIMESTAMP_MS) if kind == "prediction" else decode_event(raw, TIMESTAMP_MS)


# -- a validator for the part of JSON Schema the files use (jsonschema is no dependency) ----------

ANNOTATIONS = {"$schema", "title", "description", "default"}
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


class SchemaError(Exception):
    pass


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    checks: dict[str, Any] = {
        "string": str,
        "boolean": bool,
        "object": dict,
        "array": list,
        "null": type(None),
    }
    if name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, checks[name])


def validate(value: Any, node: dict[str, Any], path: str = "$") -> None:
    """Raise SchemaError where value breaks node; refuse keywords it does not implement."""
    unknown = (
        set(node)
        - ANNOTATIONS
        - {
            "type",
            "anyOf",
            "const",
            "properties",
            "required",
            "additionalProperties",
            "minLength",
            "maxLength",
            "format",
        }
    )
    if unknown:
        raise NotImplementedError(f"{path}: keywords {sorted(unknown)}")
    if "anyOf" in node:
        errors = []
        for option in node["anyOf"]:
            try:
                validate(value, option, path)
                break
            except SchemaError as exc:
                errors.append(str(exc))
        else:
            raise SchemaError(f"{path}: matches no option: {errors}")
    if "type" in node and not _is_type(value, node["type"]):
        raise SchemaError(f"{path}: {value!r} is not of type {node['type']}")
    if "const" in node and (value != node["const"] or type(value) is bool):
        raise SchemaError(f"{path}: {value!r} is not {node['const']!r}")
    if isinstance(value, str):
        if len(value) < node.get("minLength", 0) or len(value) > node.get("maxLength", len(value)):
            raise SchemaError(f"{path}: length {len(value)} out of bounds")
        if node.get("format") == "date-time":
            if not RFC3339.match(value):
                raise SchemaError(f"{path}: {value!r} is not an RFC 3339 date-time")
            datetime.fromisoformat(value.replace("z", "Z"))
    if isinstance(value, dict):
        for key in node.get("required", []):
            if key not in value:
                raise SchemaError(f"{path}: {key} is required")
        properties = node.get("properties", {})
        for key, item in value.items():
            if key in properties:
                validate(item, properties[key], f"{path}.{key}")
            elif node.get("additionalProperties", True) is False:
                raise SchemaError(f"{path}: unknown field {key}")


def validate_message(kind: str, message: dict[str, Any]) -> None:
    validate(message, schema(kind))
    try:
        import jsonschema  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        return
    jsonschema.Draft202012Validator(schema(kind), format_checker=jsonschema.FormatChecker()).validate(message)


# -- the files cannot drift -----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(KINDS.values()))
def test_committed_schema_is_generated_from_the_models(name: str) -> None:
    generated = GENERATOR.render(GENERATOR.schemas()[name])
    committed = (SCHEMAS / name).read_text()
    assert committed == generated, f"docs/schemas/{name} is out of date: run python docs/schemas/generate.py"


def test_schemas_describe_the_codec_envelope() -> None:
    from service.contract import EventIn, PredictionIn
    from service.kafka.codec import SCHEMA_VERSION

    for kind, model in (("prediction", PredictionIn), ("event", EventIn)):
        loaded = schema(kind)
        assert set(loaded["properties"]) == set(model.model_fields) | {"schema_version", "received_at"}
        assert set(loaded["required"]) == {n for n, f in model.model_fields.items() if f.is_required()}
        assert loaded["properties"]["schema_version"]["const"] == SCHEMA_VERSION
        assert loaded["additionalProperties"] is False


# -- the documented examples ----------------------------------------------------------------------


def kind_of(message: dict[str, Any]) -> str:
    return "event" if "event_id" in message else "prediction"


def doc_json_examples() -> list[dict[str, Any]]:
    blocks = re.findall(r"```json\n(.*?)```", CONTRACT_DOC.read_text(), flags=re.S)
    return [json.loads(block) for block in blocks]


def kcat_examples(text: str) -> list[tuple[dict[str, Any], str]]:
    """(message, the kcat command line) for every `echo '{...}' | kcat -P ...` in text."""
    found = []
    for match in re.finditer(r"echo '(\{[^']*\})'\s*\\?\s*\|\s*(kcat[^\n]*)", text):
        found.append((json.loads(match.group(1)), match.group(2)))
    return found


def test_the_doc_has_examples_of_both_kinds() -> None:
    kinds = [kind_of(m) for m in doc_json_examples()]
    assert "prediction" in kinds
    assert "event" in kinds
    assert kcat_examples(CONTRACT_DOC.read_text())
    assert kcat_examples(README.read_text())


@pytest.mark.parametrize("message", doc_json_examples(), ids=lambda m: m.get("event_id") or m["prediction_id"])
def test_doc_examples_are_valid_messages(message: dict[str, Any]) -> None:
    kind = kind_of(message)
    validate_message(kind, message)
    record = decode(kind, message)
    assert decode(kind, json.loads(encode(record))) == record


@pytest.mark.parametrize("source", [CONTRACT_DOC, README], ids=lambda p: p.name)
def test_kcat_examples_are_keyed_and_valid(source: Path) -> None:
    for message, command in kcat_examples(source.read_text()):
        validate_message("event", message)
        decode("event", message)
        assert re.search(r"-t labelloop\.events\b", command)
        assert f"-k {message['prediction_id']} " in command + " ", "the key must be the prediction_id"
        assert "-X partitioner=murmur2_random" in command, "kcat's default partitioner is not Kafka's"


def test_codec_output_is_valid() -> None:
    """What the API produces conforms to the published schemas."""
    for message in doc_json_examples():
        kind = kind_of(message)
        validate_message(kind, json.loads(encode(decode(kind, message))))


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("prediction", {"prediction_id": "p", "use_case": "recsys", "served_at": 1795000000}),
        ("prediction", {"prediction_id": "p", "use_case": "recsys", "served_at": "2026-11-29T16:20:01"}),
        ("prediction", {"prediction_id": "p", "use_case": "recsys", "model_version": 7}),
        ("prediction", {"prediction_id": "p", "use_case": "recsys", "schema_version": 2}),
        ("prediction", {"prediction_id": "p", "use_case": "recsys", "extra": 1}),
        ("prediction", {"prediction_id": "p"}),
        ("prediction", {"prediction_id": "", "use_case": "recsys"}),
        ("prediction", {"prediction_id": "p", "use_case": "recsys", "features": [1, 2]}),
        ("prediction", {"prediction_id": "p", "use_case": "recsys", "received_at": "2026-11-29T16:20:01"}),
        ("event", {"event_id": "e", "prediction_id": "p", "type": "click", "value": {"stars": 5}}),
        ("event", {"event_id": "e", "prediction_id": "p", "type": "click", "occurred_at": "yesterday"}),
        ("event", {"event_id": "e", "prediction_id": "p"}),
        ("event", {"event_id": "e" * 257, "prediction_id": "p", "type": "click"}),
    ],
)
def test_schema_and_codec_reject_alike(kind: str, message: dict[str, Any]) -> None:
    with pytest.raises(SchemaError):
        validate(message, schema(kind))
    with pytest.raises(PoisonRecord):
        decode(kind, message)
