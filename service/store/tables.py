"""Tables. Alembic migrations in migrations/ create them; this module is what code queries."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Float, Index, Integer, MetaData, String, Table, Text, false, text

from service.store.types import BigId, Json, UTCDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ID = 256  # longest accepted prediction_id / event_id / name

predictions = Table(
    "predictions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("prediction_id", String(ID), nullable=False, unique=True),
    Column("use_case", String(ID), nullable=False),
    Column("model", String(ID)),
    Column("model_version", String(ID)),
    Column("served_at", UTCDateTime, nullable=False),
    Column("subject_id", String(ID)),
    Column("features", Json),
    Column("output", Json),
    Column("context", Json),
    Column("content_hash", String(64), nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("window_end", UTCDateTime, nullable=False),
    Column("seal_at", UTCDateTime, nullable=False),
    # open -> closed -> final; `deadline` is the next watermark that moves it (W, then S, then none).
    Column("phase", String(8), nullable=False),
    Column("deadline", UTCDateTime),
    # The current label; the label_history table keeps every revision.
    Column("label", Json),
    Column("label_kind", String(32)),
    Column("label_rule", Text),
    Column("label_sources", Json),
    Column("label_status", String(16)),
    Column("revision", Integer),
    Column("seq", BigInteger),
    Column("feedback_delay_s", Float),
    # The score or estimate its policy named in the output when it arrived (service/core/quality.py).
    Column("score", Float),
    Index("ix_predictions_deadline", "deadline"),
    Index("ix_predictions_use_case_seq", "use_case", "seq"),
    Index("ix_predictions_subject_id", "subject_id"),  # erasure
    Index("ix_predictions_use_case_served_at", "use_case", "served_at"),  # retention
)

events = Table(
    "events",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("event_id", String(ID), nullable=False, unique=True),
    Column("prediction_id", String(ID), nullable=False),
    Column("type", String(ID), nullable=False),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("value", Json),
    Column("actor", String(ID)),
    Column("payload", Json),
    Column("content_hash", String(64), nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    # orphan (prediction not seen yet), counted, too_late, invalid, expired_orphan
    Column("disposition", String(16), nullable=False),
    Column("reason", Text),
    Column("orphan_expires_at", UTCDateTime),
    Index("ix_events_prediction_id", "prediction_id"),
    Index("ix_events_orphan_expires_at", "orphan_expires_at"),
)

label_history = Table(
    "label_history",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("prediction_id", String(ID), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("label", Json, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("rule", Text, nullable=False),
    Column("sources", Json, nullable=False),
    Column("status", String(16), nullable=False),
    Column("feedback_delay_s", Float),
    Column("recorded_at", UTCDateTime, nullable=False),
    Column("watermark", UTCDateTime),
    Column("policy", String(16)),  # the digest of the use case's policy that made this label
    Index("ix_label_history_prediction_id", "prediction_id"),
    Index("ix_label_history_seq", "seq"),  # datasets as of a seq
)

# The last dataset seq handed out per use case. Incrementing it locks the row until commit, so
# seqs become visible in the order they were handed out and a trainer's `since` cursor misses none.
dataset_seqs = Table(
    "dataset_seqs",
    metadata,
    Column("use_case", String(ID), primary_key=True),
    Column("last_seq", BigInteger, nullable=False, server_default=text("0")),
)

# One row per event-time source: "embedded", or "<topic>:<partition>" in Kafka mode.
watermarks = Table(
    "watermarks",
    metadata,
    Column("name", String(ID), primary_key=True),
    Column("max_event_time", UTCDateTime),
    Column("last_arrival_at", UTCDateTime),
    # Kafka mode: whether the owning consumer had read to the partition's end, and when it said so.
    Column("caught_up", Boolean, nullable=False, server_default=false()),
    Column("reported_at", UTCDateTime),
)

# Counters per use case, event type ('' when none applies) and hour of the predictions' served_at,
# kept as records arrive so the feedback-loop metrics never scan events.
stat_counters = Table(
    "stat_counters",
    metadata,
    Column("use_case", String(ID), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("event_type", String(ID), primary_key=True),
    Column("served_hour", BigInteger, primary_key=True),
    Column("value", BigInteger, nullable=False),
)

delay_buckets = Table(
    "delay_buckets",
    metadata,
    Column("use_case", String(ID), primary_key=True),
    Column("event_type", String(ID), primary_key=True),
    Column("served_hour", BigInteger, primary_key=True),
    Column("bucket", Integer, primary_key=True),
    Column("count", BigInteger, nullable=False),
    # Covers the feedback-loop query, which groups by bucket across hours: no sort, no table reads.
    Index("ix_delay_buckets_quantiles", "use_case", "event_type", "bucket", "served_hour", "count"),
    # The few hours of a `since` before its first whole day, whatever the use case.
    Index("ix_delay_buckets_hours", "served_hour", "use_case", "event_type", "bucket", "count"),
)

# The same histograms by served day (hour // 24): a range of days reads 24 times fewer rows, which
# keeps the feedback-loop endpoint fast however long the history (hourly rows only for the first,
# partial day of a `since`).
delay_buckets_daily = Table(
    "delay_buckets_daily",
    metadata,
    Column("use_case", String(ID), primary_key=True),
    Column("event_type", String(ID), primary_key=True),
    Column("served_day", BigInteger, primary_key=True),
    Column("bucket", Integer, primary_key=True),
    Column("count", BigInteger, nullable=False),
    Index("ix_delay_buckets_daily_quantiles", "use_case", "event_type", "bucket", "served_day", "count"),
)

delay_max = Table(
    "delay_max",
    metadata,
    Column("use_case", String(ID), primary_key=True),
    Column("event_type", String(ID), primary_key=True),
    Column("served_hour", BigInteger, primary_key=True),
    Column("max_s", Float, nullable=False),
)

# Model quality (service/core/quality.py) per use case, served hour ("1h", period = hours since the
# epoch) or day ("1d", days), model, version ('' when none) and label status: the sums over its
# labeled, scored predictions, kept as labels change. The key starts with the range a read scans.
_QUALITY_KEY = ("use_case", "bucket", "period", "model", "model_version", "status")
quality_sums = Table(
    "quality_sums",
    metadata,
    Column("use_case", String(ID), primary_key=True),
    Column("bucket", String(2), primary_key=True),
    Column("period", BigInteger, primary_key=True),
    Column("model", String(ID), primary_key=True),
    Column("model_version", String(ID), primary_key=True),
    Column("status", String(16), primary_key=True),
    Column("count", BigInteger, nullable=False),
    Column("label_sum", Float, nullable=False),
    Column("score_sum", Float, nullable=False),
    Column("abs_error_sum", Float, nullable=False),
    Column("squared_error_sum", Float, nullable=False),
    Column("log_loss_sum", Float, nullable=False),
)

# Binary use cases: the histogram of scores per label class under the same key.
quality_bins = Table(
    "quality_bins",
    metadata,
    *(Column(name, quality_sums.c[name].type, primary_key=True) for name in _QUALITY_KEY),
    Column("bin", Integer, primary_key=True),
    Column("negatives", BigInteger, nullable=False),
    Column("positives", BigInteger, nullable=False),
    Column("score_sum", Float, nullable=False),
)

# Kafka mode: messages sent to the dead-letter topic, once each however often a batch is replayed.
dead_letters = Table(
    "dead_letters",
    metadata,
    Column("topic", String(ID), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("offset", BigInteger, primary_key=True),
    Column("reason", Text, nullable=False),
    Column("recorded_at", UTCDateTime, nullable=False),
)

# API keys (service/auth/keys.py): the SHA-256 of each secret, never the secret. Revoked keys stay:
# once a key was ever created, the API requires one.
api_keys = Table(
    "api_keys",
    metadata,
    Column("key_id", String(12), primary_key=True),
    Column("name", String(ID), nullable=False),
    Column("scopes", String(ID), nullable=False),  # comma-separated Scope values
    Column("secret_hash", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
)

# Erasures of a subject and retention purges: who, when and how many rows, never whose.
erasures = Table(
    "erasures",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),  # subject | retention
    Column("requested_by", String(ID), nullable=False),  # an API key id, or the CLI
    Column("requested_at", UTCDateTime, nullable=False),
    Column("use_case", String(ID)),  # retention: the use case purged
    Column("predictions", BigInteger, nullable=False),
    Column("events", BigInteger, nullable=False),
    Column("labels", BigInteger, nullable=False),  # label_history rows
)
