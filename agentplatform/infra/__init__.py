"""Connections and machine facts: the Redis client and every Redis key name, the CPU, and the
check that pgvector runs on it."""
