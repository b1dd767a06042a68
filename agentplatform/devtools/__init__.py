"""Development tooling: the embedded PostgreSQL and Redis, `make run`'s supervisor, the test
servers. Imported only by entry points (manage.py, ASGI, Celery) and tests, never by the
platform's own code."""
