"""Label policies: what each event type means per use case, windows, lateness and resolution."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

_SUBJECT_FIELD = re.compile(r"^(subject_id|(features|context)\.[^.\s]+)$")
_OUTPUT_PATH = re.compile(r"^output(\.[^.\s]+)+$")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> Any:
    """Accept "10m", "1h", "90d", "500ms" (and numbers of seconds) besides pydantic's own formats."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return timedelta(seconds=float(match[1]) * _UNIT_SECONDS[match[2]])
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class LabelKind(StrEnum):
    EXPLICIT = "explicit"
    BEHAVIORAL = "behavioral"
    NATURAL = "natural"
    IMPLICIT_NEGATIVE = "implicit_negative"


class EventKind(StrEnum):
    POSITIVE = "positive"
    NEGATIVE = "negative"
    EXPLICIT = "explicit"
    NATURAL = "natural"


class EventRule(BaseModel):
    """What one event type means for a use case."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: EventKind
    rank: int = Field(0, description="Among behavioral events, the higher rank decides the label.")
    positive_at_least: float | None = Field(
        None, description="Explicit, binary: a numeric value at or above this is 1, below it 0."
    )
    values: dict[str, float] | None = Field(
        None, description="Explicit: maps string values (thumbs_up, ...) to labels."
    )

    @model_validator(mode="after")
    def _mapping_only_for_explicit(self) -> EventRule:
        if self.kind is not EventKind.EXPLICIT and (self.positive_at_least is not None or self.values):
            raise ValueError("positive_at_least and values apply to explicit events only")
        return self


class FeaturePolicy(BaseModel):
    """Feature keys kept out of the store: dropped at ingest, or replaced by a keyed hash (HMAC-SHA256
    with LABELLOOP_FEATURE_HASH_KEY), which still joins and groups but cannot be read back."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    drop: frozenset[str] = frozenset()
    hash: frozenset[str] = frozenset()

    @field_serializer("drop", "hash")
    def _sorted(self, names: frozenset[str]) -> list[str]:
        return sorted(names)  # a set's order varies from run to run; the digest must not

    @model_validator(mode="after")
    def _disjoint(self) -> FeaturePolicy:
        both = self.drop & self.hash
        if both:
            raise ValueError(f"a feature is either dropped or hashed, not both: {sorted(both)}")
        return self


class UseCasePolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    task: Literal["binary", "regression"]
    events: dict[str, EventRule] = Field(min_length=1)
    window: Duration
    allowed_lateness: Duration = timedelta(0)
    late_policy: Literal["revise", "ignore"] = "revise"
    on_window_close: Literal["implicit_negative", "expire"] | None = Field(
        None, description="Default: implicit_negative for binary, expire for regression."
    )
    priority: tuple[LabelKind, ...] = (
        LabelKind.EXPLICIT,
        LabelKind.BEHAVIORAL,
        LabelKind.NATURAL,
        LabelKind.IMPLICIT_NEGATIVE,
    )
    explicit_resolution: Literal["latest", "majority"] = "latest"
    features: FeaturePolicy = FeaturePolicy()
    subject: str = Field(
        "subject_id",
        description="Where a prediction names the person it is about, for erasure: subject_id, or a "
        "key of features or context (features.user_id); that key's value then fills subject_id.",
    )
    retention: Duration | None = Field(
        None, description="Final predictions served longer ago than this are purged (`labelloop purge`)."
    )
    score: str | None = Field(
        None, description="Binary: where a prediction's output holds its score, a probability (output.score)."
    )
    estimate: str | None = Field(
        None, description="Regression: where a prediction's output holds its estimate of the label (output.eta_s)."
    )

    @field_validator("score", "estimate")
    @classmethod
    def _output_path(cls, path: str | None) -> str | None:
        if path is not None and not _OUTPUT_PATH.match(path):
            raise ValueError("must name a key of the prediction's output: output.<key>[.<key>...]")
        return path

    @model_validator(mode="after")
    def _consistent(self) -> UseCasePolicy:
        if not _SUBJECT_FIELD.match(self.subject):
            raise ValueError("subject must be subject_id, features.<key> or context.<key>")
        if self.subject_key in self.features.drop and self.subject.startswith("features."):
            raise ValueError(f"{self.subject} names the subject: it cannot be dropped (hash it instead)")
        if self.retention is not None and self.retention < self.window + self.seal_delay:
            raise ValueError("retention must be at least window + allowed_lateness: labels must be final first")
        if self.window <= timedelta(0):
            raise ValueError("window must be positive")
        if self.allowed_lateness < timedelta(0):
            raise ValueError("allowed_lateness must not be negative")
        if self.on_window_close is None:
            default = "implicit_negative" if self.task == "binary" else "expire"
            object.__setattr__(self, "on_window_close", default)
        if self.task == "regression" and self.on_window_close == "implicit_negative":
            raise ValueError("implicit_negative needs a binary task; regression windows expire")
        if self.task == "binary" and self.estimate is not None:
            raise ValueError("estimate applies to regression tasks; a binary task names its score")
        if self.task == "regression" and self.score is not None:
            raise ValueError("score applies to binary tasks; a regression task names its estimate")
        if sorted(self.priority) != sorted(LabelKind):
            raise ValueError(f"priority must list each label kind once: {[k.value for k in LabelKind]}")
        for name, rule in self.events.items():
            if self.task == "binary" and rule.kind is EventKind.NATURAL:
                raise ValueError(f"events.{name}: natural values need a regression task")
            if self.task == "regression" and rule.kind in (EventKind.POSITIVE, EventKind.NEGATIVE):
                raise ValueError(f"events.{name}: positive/negative signals need a binary task")
            if self.task == "regression" and rule.positive_at_least is not None:
                raise ValueError(f"events.{name}: positive_at_least makes a binary label; this task is regression")
            if self.task == "binary" and rule.values and set(rule.values.values()) - {0, 1}:
                raise ValueError(f"events.{name}: values must map to 0 or 1 in a binary task")
        return self

    @cached_property
    def digest(self) -> str:
        """The version of this policy: every label records the digest of the policy that made it."""
        content = self.model_dump(mode="json")
        for optional in ("score", "estimate"):  # added later: a policy without them keeps its digest
            if content[optional] is None:
                del content[optional]
        canonical = orjson.dumps(content, option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(canonical).hexdigest()[:16]

    @property
    def subject_key(self) -> str | None:
        """The features or context key that names the subject, or None when it is subject_id."""
        return None if self.subject == "subject_id" else self.subject.split(".", 1)[1]

    @property
    def output_path(self) -> tuple[str, ...] | None:
        """The keys under output that lead to the score or estimate, or None when the policy names neither."""
        path = self.score or self.estimate
        return None if path is None else tuple(path.split(".")[1:])

    @property
    def seal_delay(self) -> timedelta:
        """Time after the window end during which late events still count (0 under `ignore`)."""
        return timedelta(0) if self.late_policy == "ignore" else self.allowed_lateness


class PolicySet(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    use_cases: dict[str, UseCasePolicy] = Field(min_length=1)

    def event_types(self) -> frozenset[str]:
        return frozenset(t for uc in self.use_cases.values() for t in uc.events)

    @property
    def hashes_features(self) -> bool:
        return any(uc.features.hash for uc in self.use_cases.values())


class PolicyError(Exception):
    """A policy file that cannot be used; the message names the file, the path and the reason."""


BUNDLED_POLICIES = Path(__file__).resolve().parent.parent / "policies" / "default.yaml"


def load_policies(path: Path) -> PolicySet:
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read policy file: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not valid YAML: {exc}") from exc
    try:
        return PolicySet.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise PolicyError(f"{path}: invalid policy: {problems}") from exc
