"""Prometheus metrics of one process, on a registry of its own (one per app, so tests can build many)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from service.store.quality import Latest
from service.store.stats import EVENT_OUTCOMES, LABEL_STATS, Stat, StatsDelta

QUALITY_GAUGES = ("count", "positive_rate", "mean_score", "log_loss", "brier", "roc_auc", "mae", "rmse", "bias")
DELAY_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400)


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.records = Counter(
            "labelloop_records_ingested",
            "Records accepted or recognised as duplicates.",
            ["record", "outcome"],
            registry=self.registry,
        )
        self.labels = Counter(
            "labelloop_labels",
            "Labels issued or revised, by the kind they took.",
            ["use_case", "kind"],
            registry=self.registry,
        )
        self.events = Counter(
            "labelloop_event_outcomes",
            "Joined events by outcome: too_late, clock_skew, invalid, orphans_expired.",
            ["use_case", "outcome"],
            registry=self.registry,
        )
        self.delay = Histogram(
            "labelloop_feedback_delay_seconds",
            "Time from serving a prediction to an event about it.",
            ["use_case", "event_type"],
            buckets=DELAY_BUCKETS,
            registry=self.registry,
        )
        self.pending = Gauge(
            "labelloop_pending_windows",
            "Predictions whose label is not final yet.",
            ["use_case"],
            registry=self.registry,
        )
        self.dead_letters = Gauge(
            "labelloop_dead_letters",
            "Records the joiners sent to the dead-letter topic (Kafka mode), from the store.",
            registry=self.registry,
        )
        self.quality = Gauge(
            "labelloop_model_quality",
            "Model quality of the latest served hour with labels of that status (GET /v1/metrics/quality).",
            ["use_case", "model", "model_version", "status", "metric"],
            registry=self.registry,
        )
        self.quality_hour = Gauge(
            "labelloop_model_quality_hour_start_seconds",
            "Where the served hour of labelloop_model_quality starts (Unix time).",
            ["use_case", "model", "model_version", "status"],
            registry=self.registry,
        )
        self.watermark_lag = Gauge(
            "labelloop_watermark_lag_seconds", "Wall clock minus the watermark.", registry=self.registry
        )

    def set_quality(self, latest: list[Latest]) -> None:
        """The figures of each model version's latest hour (of the last week: an older version disappears)."""
        self.quality.clear()
        self.quality_hour.clear()
        for q in latest:
            names = (q.use_case, q.model, q.model_version, q.status)
            self.quality_hour.labels(*names).set(q.start.timestamp())
            for metric in QUALITY_GAUGES:
                value = q.figures.get(metric)
                if value is not None:
                    self.quality.labels(*names, metric).set(value)

    def record(self, record: str, accepted: int, duplicates: int) -> None:
        self.records.labels(record, "accepted").inc(accepted)
        self.records.labels(record, "duplicate").inc(duplicates)

    def apply(self, delta: StatsDelta) -> None:
        """Count what a committed unit of work did."""
        for (use_case, name, _, _), n in delta.counters.items():
            if n <= 0:
                continue
            if name in LABEL_STATS:
                self.labels.labels(use_case, LABEL_STATS[Stat(name)].value).inc(n)
            elif name in EVENT_OUTCOMES:
                self.events.labels(use_case, name).inc(n)
        for use_case, event_type, delay_s in delta.delays:
            self.delay.labels(use_case, event_type).observe(delay_s)
