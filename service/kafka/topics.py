"""Create labelloop's topics when missing, so a new user needs no separate step."""

from __future__ import annotations

import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from service.config import Settings

log = logging.getLogger(__name__)


class TopicMismatch(Exception):
    """The predictions and events topics exist with different partition counts."""


async def ensure_topics(settings: Settings) -> None:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id="labelloop-admin",
        request_timeout_ms=int(settings.kafka_produce_timeout.total_seconds() * 1000),
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = (settings.kafka_predictions_topic, settings.kafka_events_topic, settings.kafka_dlq_topic)
        # Explicit configs: some clients read retention.ms from the topic and expect it set.
        configs = {"retention.ms": str(int(settings.kafka_retention.total_seconds() * 1000))}
        missing = [
            NewTopic(name, settings.kafka_partitions, settings.kafka_replication_factor, topic_configs=configs)
            for name in wanted
            if name not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
                log.info("created topics %s", [t.name for t in missing])
            except TopicAlreadyExistsError:
                pass  # another process created them first
        counts = await _partition_counts(admin, [settings.kafka_predictions_topic, settings.kafka_events_topic])
        if len(set(counts.values())) > 1:
            raise TopicMismatch(
                f"predictions and events topics must be co-partitioned (same partition count): {counts}"
            )
    finally:
        await admin.close()


async def _partition_counts(admin: AIOKafkaAdminClient, topics: list[str]) -> dict[str, int]:
    described = await admin.describe_topics(topics)
    return {t["topic"]: len(t["partitions"]) for t in described}
