"""The Django project's wiring: settings, URLs, ASGI routing, the Celery app, system checks."""
