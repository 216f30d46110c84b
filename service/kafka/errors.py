"""Kafka-mode failures the API answers, importable without loading the Kafka client."""


class BrokerUnavailable(Exception):
    """The broker did not acknowledge in time; nothing may be reported as stored."""


class IdempotenceRefused(Exception):
    """The broker refused an idempotent producer: a configuration error, reported at start-up."""
