"""Kafka joiners: move records between Kafka topics and the label core (see issue: Kafka mode)."""
