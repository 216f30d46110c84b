"""Policy parsing and validation: the bundled file, durations and the errors of unusable files."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from service.core.policy import (
    BUNDLED_POLICIES,
    EventKind,
    LabelKind,
    PolicyError,
    UseCasePolicy,
    load_policies,
    parse_duration,
)


@pytest.fixture(scope="module")
def bundled_raw() -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load(BUNDLED_POLICIES.read_text())
    return raw


def _write(tmp_path: Path, name: str, raw: Any) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


# --- the bundled policies -------------------------------------------------------------------------


def test_bundled_policies_load() -> None:
    policies = load_policies(BUNDLED_POLICIES)
    assert set(policies.use_cases) == {"recsys", "eta", "fraud"}
    assert {"click", "purchase", "return", "rating", "trip_completed", "chargeback"} <= policies.event_types()


def test_bundled_recsys_return_outranks_purchase() -> None:
    recsys = load_policies(BUNDLED_POLICIES).use_cases["recsys"]
    assert recsys.task == "binary"
    assert recsys.window == timedelta(minutes=10)
    assert recsys.allowed_lateness == timedelta(hours=1)
    assert recsys.seal_delay == timedelta(hours=1)
    assert recsys.on_window_close == "implicit_negative"  # the binary default
    assert recsys.events["return"].kind is EventKind.NEGATIVE
    assert recsys.events["purchase"].kind is EventKind.POSITIVE
    assert recsys.events["return"].rank > recsys.events["purchase"].rank
    assert recsys.events["purchase"].rank > recsys.events["add_to_cart"].rank > recsys.events["click"].rank
    assert recsys.events["rating"].kind is EventKind.EXPLICIT
    assert recsys.events["rating"].positive_at_least == 4
    assert recsys.events["thumbs"].values == {"up": 1, "down": 0}
    assert recsys.priority == (
        LabelKind.EXPLICIT,
        LabelKind.BEHAVIORAL,
        LabelKind.NATURAL,
        LabelKind.IMPLICIT_NEGATIVE,
    )
    assert recsys.explicit_resolution == "latest"


def test_bundled_eta_expires() -> None:
    eta = load_policies(BUNDLED_POLICIES).use_cases["eta"]
    assert eta.task == "regression"
    assert eta.window == timedelta(hours=6)
    assert eta.on_window_close == "expire"
    assert eta.seal_delay == timedelta(0)
    assert eta.events["trip_completed"].kind is EventKind.NATURAL


def test_bundled_fraud_window_is_90_days() -> None:
    fraud = load_policies(BUNDLED_POLICIES).use_cases["fraud"]
    assert fraud.task == "binary"
    assert fraud.window == timedelta(days=90)
    assert fraud.on_window_close == "implicit_negative"
    assert fraud.events["chargeback"].kind is EventKind.POSITIVE
    assert fraud.events["fraud_confirmed"].values == {"fraud": 1, "legit": 0}


# --- durations ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10m", timedelta(minutes=10)),
        ("1h", timedelta(hours=1)),
        ("90d", timedelta(days=90)),
        ("500ms", timedelta(milliseconds=500)),
        ("30s", timedelta(seconds=30)),
        ("2w", timedelta(weeks=2)),
        ("1.5h", timedelta(minutes=90)),
        (" 10 m ", timedelta(minutes=10)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


def test_parse_duration_leaves_other_values_to_pydantic() -> None:
    assert parse_duration(600) == 600
    assert parse_duration("PT10M") == "PT10M"
    assert parse_duration("ten minutes") == "ten minutes"


@pytest.mark.parametrize(
    ("window", "expected"),
    [("10m", timedelta(minutes=10)), ("500ms", timedelta(milliseconds=500)), (600, timedelta(minutes=10))],
)
def test_durations_in_a_policy(window: object, expected: timedelta) -> None:
    policy = UseCasePolicy.model_validate({"task": "binary", "window": window, "events": {"c": {"kind": "positive"}}})
    assert policy.window == expected


# --- seal delay -----------------------------------------------------------------------------------


def test_late_policy_ignore_gives_seal_delay_zero() -> None:
    policy = UseCasePolicy.model_validate(
        {
            "task": "binary",
            "window": "10m",
            "allowed_lateness": "1h",
            "late_policy": "ignore",
            "events": {"click": {"kind": "positive"}},
        }
    )
    assert policy.allowed_lateness == timedelta(hours=1)
    assert policy.seal_delay == timedelta(0)


def test_late_policy_revise_gives_seal_delay_allowed_lateness() -> None:
    policy = UseCasePolicy.model_validate(
        {"task": "binary", "window": "10m", "allowed_lateness": "1h", "events": {"click": {"kind": "positive"}}}
    )
    assert policy.late_policy == "revise"
    assert policy.seal_delay == timedelta(hours=1)


def test_regression_defaults_to_expire() -> None:
    policy = UseCasePolicy.model_validate({"task": "regression", "window": "1h", "events": {"v": {"kind": "natural"}}})
    assert policy.on_window_close == "expire"


# --- invalid files --------------------------------------------------------------------------------


def _set(*keys: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(raw: dict[str, Any]) -> None:
        target = raw
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return mutate


INVALID = [
    pytest.param(
        _set("use_cases", "recsys", "window", value="ten minutes"),
        "use_cases.recsys.window",
        "timedelta",
        id="bad-duration",
    ),
    pytest.param(
        _set("use_cases", "recsys", "window", value="0s"),
        "use_cases.recsys",
        "window must be positive",
        id="zero-window",
    ),
    pytest.param(
        _set("use_cases", "recsys", "colour", value="red"),
        "use_cases.recsys.colour",
        "Extra inputs are not permitted",
        id="unknown-key",
    ),
    pytest.param(
        _set("use_cases", "recsys", "events", "click", "weight", value=2),
        "use_cases.recsys.events.click.weight",
        "Extra inputs are not permitted",
        id="unknown-event-key",
    ),
    pytest.param(
        _set("use_cases", "recsys", "events", "dwell", value={"kind": "natural"}),
        "use_cases.recsys",
        "events.dwell: natural values need a regression task",
        id="natural-in-binary",
    ),
    pytest.param(
        _set("use_cases", "eta", "events", "click", value={"kind": "positive"}),
        "use_cases.eta",
        "events.click: positive/negative signals need a binary task",
        id="positive-in-regression",
    ),
    pytest.param(
        _set("use_cases", "eta", "events", "cancel", value={"kind": "negative"}),
        "use_cases.eta",
        "events.cancel: positive/negative signals need a binary task",
        id="negative-in-regression",
    ),
    pytest.param(
        _set("use_cases", "eta", "on_window_close", value="implicit_negative"),
        "use_cases.eta",
        "implicit_negative needs a binary task",
        id="implicit-negative-for-regression",
    ),
    pytest.param(
        _set("use_cases", "recsys", "priority", value=["explicit", "behavioral", "natural"]),
        "use_cases.recsys",
        "priority must list each label kind once",
        id="priority-missing-kind",
    ),
    pytest.param(
        _set("use_cases", "recsys", "priority", value=["explicit", "behavioral", "natural", "natural"]),
        "use_cases.recsys",
        "priority must list each label kind once",
        id="priority-duplicate-kind",
    ),
    pytest.param(
        _set("use_cases", "recsys", "events", "click", "positive_at_least", value=1),
        "use_cases.recsys.events.click",
        "apply to explicit events only",
        id="threshold-on-behavioral-event",
    ),
    pytest.param(
        _set("use_cases", "recsys", "late_policy", value="sometimes"),
        "use_cases.recsys.late_policy",
        "'revise' or 'ignore'",
        id="bad-late-policy",
    ),
    pytest.param(
        _set("use_cases", "recsys", "allowed_lateness", value=-3600),
        "use_cases.recsys",
        "allowed_lateness must not be negative",
        id="negative-lateness",
    ),
]


@pytest.mark.parametrize(("mutate", "where", "reason"), INVALID)
def test_invalid_policy_names_file_path_and_reason(
    tmp_path: Path,
    bundled_raw: dict[str, Any],
    mutate: Callable[[dict[str, Any]], None],
    where: str,
    reason: str,
) -> None:
    raw = copy.deepcopy(bundled_raw)
    mutate(raw)
    path = _write(tmp_path, "broken.yaml", raw)
    with pytest.raises(PolicyError) as excinfo:
        load_policies(path)
    message = str(excinfo.value)
    assert message.startswith(f"{path}: invalid policy: ")
    assert f"{where}: " in message
    assert reason in message


def test_invalid_policy_path_points_at_the_faulty_use_case(tmp_path: Path, bundled_raw: dict[str, Any]) -> None:
    raw = copy.deepcopy(bundled_raw)
    raw["use_cases"]["fraud"]["window"] = "soon"
    with pytest.raises(PolicyError) as excinfo:
        load_policies(_write(tmp_path, "p.yaml", raw))
    message = str(excinfo.value)
    assert "use_cases.fraud.window" in message
    assert "use_cases.recsys" not in message
    assert "use_cases.eta" not in message


def test_bad_yaml(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("use_cases: [recsys\n  task: :\n")
    with pytest.raises(PolicyError, match="not valid YAML") as excinfo:
        load_policies(path)
    assert str(excinfo.value).startswith(f"{path}: ")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    with pytest.raises(PolicyError, match="cannot read policy file") as excinfo:
        load_policies(path)
    assert str(excinfo.value).startswith(f"{path}: ")
    assert "No such file" in str(excinfo.value)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    with pytest.raises(PolicyError, match="<root>") as excinfo:
        load_policies(path)
    assert str(excinfo.value).startswith(f"{path}: invalid policy: ")


def test_no_use_cases(tmp_path: Path) -> None:
    path = _write(tmp_path, "none.yaml", {"version": 1, "use_cases": {}})
    with pytest.raises(PolicyError, match="use_cases: ") as excinfo:
        load_policies(path)
    assert str(excinfo.value).startswith(f"{path}: ")


def test_unknown_version(tmp_path: Path, bundled_raw: dict[str, Any]) -> None:
    raw = copy.deepcopy(bundled_raw)
    raw["version"] = 2
    with pytest.raises(PolicyError, match="version: "):
        load_policies(_write(tmp_path, "v2.yaml", raw))


def test_valid_variant_loads(tmp_path: Path, bundled_raw: dict[str, Any]) -> None:
    """The writer/loader round trip itself works, so the failures above come from the mutations."""
    raw = copy.deepcopy(bundled_raw)
    raw["use_cases"]["recsys"]["explicit_resolution"] = "majority"
    policies = load_policies(_write(tmp_path, "ok.yaml", raw))
    assert policies.use_cases["recsys"].explicit_resolution == "majority"


@pytest.mark.parametrize(
    ("task", "rule", "reason"),
    [
        ("regression", {"kind": "explicit", "positive_at_least": 4}, "positive_at_least makes a binary label"),
        ("binary", {"kind": "explicit", "values": {"meh": 0.5, "good": 1}}, "values must map to 0 or 1"),
    ],
)
def test_explicit_mappings_must_fit_the_task(task: str, rule: dict[str, object], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        UseCasePolicy.model_validate({"task": task, "window": "1h", "events": {"e": rule}})


def test_the_policy_digest_names_its_content(tmp_path: Path, bundled_raw: dict[str, Any]) -> None:
    first = load_policies(BUNDLED_POLICIES).use_cases["recsys"]
    assert first.digest == load_policies(BUNDLED_POLICIES).use_cases["recsys"].digest
    changed = copy.deepcopy(bundled_raw)
    changed["use_cases"]["recsys"]["window"] = "20m"
    assert load_policies(_write(tmp_path, "w.yaml", changed)).use_cases["recsys"].digest != first.digest
    one, other = copy.deepcopy(bundled_raw), copy.deepcopy(bundled_raw)
    one["use_cases"]["recsys"]["features"] = {"drop": ["a", "b", "c"]}
    other["use_cases"]["recsys"]["features"] = {"drop": ["c", "a", "b"]}
    digests = {
        load_policies(_write(tmp_path, f"{n}.yaml", raw)).use_cases["recsys"].digest
        for n, raw in (("1", one), ("2", other))
    }
    assert len(digests) == 1  # the order a set is written in is no part of the policy


def test_a_policy_without_score_keeps_the_digest_it_had(tmp_path: Path, bundled_raw: dict[str, Any]) -> None:
    raw = copy.deepcopy(bundled_raw)
    del raw["use_cases"]["recsys"]["score"], raw["use_cases"]["eta"]["estimate"]
    policies = load_policies(_write(tmp_path, "old.yaml", raw))
    # The digests these policies had before score and estimate existed: their labels' policy stays theirs.
    assert (policies.use_cases["recsys"].digest, policies.use_cases["eta"].digest) == (
        "406a9b0e76aab72c",
        "48f559537b44612c",
    )
    assert load_policies(BUNDLED_POLICIES).use_cases["recsys"].digest != "406a9b0e76aab72c"


@pytest.mark.parametrize(
    ("use_case", "field", "path", "reason"),
    [
        ("recsys", "score", "features.score", "use_cases.recsys.score: .*must name a key of the prediction's output"),
        ("recsys", "score", "output", "must name a key of the prediction's output"),
        ("recsys", "estimate", "output.eta_s", "estimate applies to regression tasks"),
        ("eta", "score", "output.p", "score applies to binary tasks"),
    ],
)
def test_score_and_estimate_paths_are_checked_at_load(
    tmp_path: Path, bundled_raw: dict[str, Any], use_case: str, field: str, path: str, reason: str
) -> None:
    raw = copy.deepcopy(bundled_raw)
    raw["use_cases"][use_case][field] = path
    with pytest.raises(PolicyError, match=reason):
        load_policies(_write(tmp_path, "bad.yaml", raw))


def test_the_bundled_policies_name_their_outputs() -> None:
    policies = load_policies(BUNDLED_POLICIES).use_cases
    assert (policies["recsys"].score, policies["eta"].estimate, policies["fraud"].score) == (
        "output.score",
        "output.eta_s",
        "output.score",
    )
    assert policies["recsys"].output_path == ("score",)
