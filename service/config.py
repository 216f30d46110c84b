"""All settings, read from LABELLOOP_* environment variables (or a .env file)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from annotated_types import Ge, Le
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.contract import Limits
from service.core.policy import BUNDLED_POLICIES, Duration
from service.store.database import Timeouts


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LABELLOOP_", env_file=".env", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./labelloop.db"
    policies: Path = BUNDLED_POLICIES
    host: str = "127.0.0.1"
    port: Annotated[int, Ge(1), Le(65535)] = 8000
    allowed_disorder: Duration = timedelta(seconds=5)
    idle_timeout: Duration = timedelta(seconds=5)
    orphan_ttl: Duration = timedelta(hours=24)
    sweep_interval: Duration = Field(
        timedelta(seconds=1),
        description="Embedded mode: how often the idle watermark and window sweep run (joiners: every poll).",
    )
    sweep_limit: Annotated[int, Ge(1)] = Field(
        10_000,
        description="Most windows closed in one transaction; a larger backlog closes over several, each kept short.",
    )
    max_batch: Annotated[int, Ge(1)] = 10_000
    dataset_page_bytes: Annotated[int, Ge(1)] = Field(
        4 * 1024 * 1024,
        description="A dataset response is read and sent in pages of at most this many bytes (or 5,000 rows).",
    )
    max_queued_records: Annotated[int, Ge(1)] = Field(
        100_000, description="Records waiting for a commit beyond which new requests answer 503 (load shedding)."
    )
    max_queue_delay: Duration = Field(
        timedelta(seconds=2), description="Wait of the oldest queued request beyond which new requests answer 503."
    )
    purge_interval: Duration = Field(
        timedelta(hours=1),
        description="How often the API purges what the policies' `retention` let expire (`labelloop purge` at once).",
    )
    state_capacity: Annotated[int, Ge(0)] = Field(
        100_000,
        description="Embedded mode: open predictions whose label state the API process keeps in memory (about "
        "1 KB each); the rest are read from the store when needed. 0 reads every one from the store.",
    )
    migrate_on_start: bool | None = Field(
        None, description="Run migrations when `serve` starts; default: on for SQLite, off otherwise."
    )
    feature_hash_key: SecretStr | None = Field(
        None, description="Key of the HMAC that replaces the features a policy hashes (features.hash)."
    )
    log_level: str = "info"
    log_format: Literal["json", "text"] = Field("json", description="json: one JSON object per line.")

    auth: Literal["auto", "required"] = Field(
        "auto",
        description="auto: API keys are required once one was ever created (`labelloop keys create`); until then "
        "the API is open and says so in its log. required: always (no key, no access).",
    )
    auth_refresh: Duration = Field(
        timedelta(seconds=5), description="How soon a key created or revoked elsewhere takes effect."
    )
    flip_refresh: Duration = Field(
        timedelta(seconds=60),
        description="How long a use case's p_flip curve (from the delay histograms) serves dataset reads.",
    )
    max_body_bytes: Annotated[int, Ge(1024)] = Field(
        10 * 1024 * 1024, description="Largest request body; larger ones answer 413 before they are parsed."
    )
    max_field_bytes: Annotated[int, Ge(1)] = Field(
        256 * 1024, description="Largest features, output, context or payload, as JSON."
    )
    max_json_depth: Annotated[int, Ge(1)] = Field(32, description="Deepest nesting within one of those fields.")
    max_json_keys: Annotated[int, Ge(1)] = Field(1000, description="Most object keys within one of those fields.")
    max_string_length: Annotated[int, Ge(1)] = Field(65536, description="Longest string within a record.")

    db_connect_timeout: Duration = Field(timedelta(seconds=5), description="Longest wait to connect to PostgreSQL.")
    db_statement_timeout: Duration = Field(
        timedelta(seconds=30), description="Longest statement (PostgreSQL) or wait for SQLite's write lock."
    )
    db_pool_timeout: Duration = Field(timedelta(seconds=10), description="Longest wait for a free connection.")

    # Kafka mode: set the bootstrap servers and the API produces to Kafka; `labelloop consume` joins.
    kafka_bootstrap_servers: str | None = None
    kafka_predictions_topic: str = "labelloop.predictions"
    kafka_events_topic: str = "labelloop.events"
    kafka_dlq_topic: str = "labelloop.dlq"
    kafka_partitions: Annotated[int, Ge(1)] = 12
    kafka_replication_factor: Annotated[int, Ge(1)] = 1
    kafka_retention: Duration = Field(timedelta(days=7), description="retention.ms of topics labelloop creates.")
    kafka_group_id: str = "labelloop.joiner"
    kafka_produce_timeout: Duration = Field(
        timedelta(seconds=10), description="Longest wait for the broker's acks before the API answers 503."
    )
    kafka_idempotence: bool = Field(True, description="Idempotent producer (needs broker support).")
    kafka_compression: str | None = "gzip"
    kafka_linger: Duration = Field(
        timedelta(0),
        description="The producer's linger.ms. The API's group commit already batches concurrent requests "
        "into one produce and waits for its acks before the next, so a linger only delays every group "
        "(5 ms: 2.6x fewer single-record requests/s; bench/findings.md).",
    )
    kafka_session_timeout: Duration = timedelta(seconds=10)
    kafka_max_records: Annotated[int, Ge(1)] = 5000
    kafka_owner_timeout: Duration = Field(
        timedelta(seconds=15),
        description="A partition whose consumer has not reported for this long is never idle.",
    )
    consumer_metrics_port: Annotated[int, Ge(0), Le(65535)] | None = Field(
        None, description="Serve the joiner's Prometheus metrics on this port."
    )
    consumer_metrics_host: str = Field(
        "127.0.0.1",
        description="Where the joiner's metrics listen (counts only, no key checked): loopback unless a scraper "
        "on a private network needs it (compose: 0.0.0.0, port not published).",
    )

    @property
    def timeouts(self) -> Timeouts:
        return Timeouts(
            connect=self.db_connect_timeout.total_seconds(),
            statement=self.db_statement_timeout.total_seconds(),
            pool=self.db_pool_timeout.total_seconds(),
        )

    @property
    def hash_key(self) -> bytes | None:
        return self.feature_hash_key.get_secret_value().encode() if self.feature_hash_key else None

    @property
    def limits(self) -> Limits:
        return Limits(self.max_field_bytes, self.max_json_depth, self.max_json_keys, self.max_string_length)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def kafka_mode(self) -> bool:
        return bool(self.kafka_bootstrap_servers)

    @property
    def kafka_topics(self) -> tuple[str, str] | None:
        """The topics whose partitions make the watermark in Kafka mode; None in embedded mode."""
        return (self.kafka_predictions_topic, self.kafka_events_topic) if self.kafka_mode else None

    @property
    def should_migrate_on_start(self) -> bool:
        return self.is_sqlite if self.migrate_on_start is None else self.migrate_on_start
