"""The HTTP layer: problem details, idempotency, authentication, throttling, middleware,
pagination, schema, health."""
