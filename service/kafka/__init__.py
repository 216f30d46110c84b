"""Kafka adapter shared by the API (producing) and the joiners: message codec, producer, topics."""
