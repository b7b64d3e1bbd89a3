"""Kafka consumers, one per reaction, each in its own consumer group."""
