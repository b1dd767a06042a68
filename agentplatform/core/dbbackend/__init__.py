"""Django's PostgreSQL backend, with each connection kept in the current tenant scope."""
