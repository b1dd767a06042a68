from __future__ import annotations

from django.db import migrations
from pgvector.django import VectorExtension


class Migration(migrations.Migration):
    """pgvector, for semantic memories. Migrations run as the database owner."""

    initial = True
    dependencies: list[tuple[str, str]] = []
    operations = [VectorExtension()]
