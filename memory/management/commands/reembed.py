from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from agentplatform.management.base import PlatformCommand
from agentplatform.management.progress import ProgressBar
from agentplatform.models import Tenant
from memory.embeddings import get_embedder
from memory.models import Memory


class Command(PlatformCommand):
    help = (
        "Re-embed a tenant's memories with the configured embedding model: those made by "
        "another model (a model change), or all of them with --all."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--all", action="store_true", help="also rows already current")
        parser.add_argument("--batch", type=int, default=256)

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = Tenant.objects.filter(slug=options["slug"]).first()
        if tenant is None:
            raise CommandError(f"No tenant {options['slug']!r}.")
        embedder = get_embedder()
        rows = Memory.objects.filter(tenant=tenant)
        if not options["all"]:
            rows = rows.exclude(embedding_model=embedder.name)
        ids = list(rows.order_by("pk").values_list("pk", flat=True))
        progress = ProgressBar(len(ids), f"re-embedding {tenant.slug}", self.stderr)
        for start in range(0, len(ids), options["batch"]):
            batch = list(Memory.objects.filter(pk__in=ids[start : start + options["batch"]]))
            vectors = embedder.embed([memory.text for memory in batch])
            for memory, vector in zip(batch, vectors, strict=True):
                memory.embedding = vector
                memory.embedding_model = embedder.name
            Memory.objects.bulk_update(batch, ["embedding", "embedding_model"])
            progress.advance(len(batch))
        progress.finish()
        self.stdout.write(f"Re-embedded {len(ids)} memories of {tenant.slug} with {embedder.name}.")
