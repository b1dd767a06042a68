"""Namespaced settings of the memory app (`MEMORY = {...}` overrides), defaults here."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver


@dataclass(frozen=True)
class MemorySettings:
    # Two statements are the same memory at or above this cosine similarity (all-MiniLM:
    # paraphrases score ~0.85-0.95, different facts about the same thing ~0.5) and when
    # their key tokens (numbers, names) agree.
    DEDUP_THRESHOLD: float = 0.85
    # An end user's partition up to this many rows is searched exactly (btree + sort);
    # above it, HNSW with pgvector's iterative scan.
    EXACT_SCAN_LIMIT: int = 20_000
    HNSW_EF_SEARCH: int = 200
    # Retrieved memories below this similarity are not put in the context.
    MIN_SCORE: float = 0.25
    CONTEXT_MEMORIES: int = 5
    CONTEXT_SUMMARIES: int = 5
    # Share of the agent's context budget kept for memories and summaries.
    CONTEXT_SHARE: float = 0.25
    # Extract facts with the agent's LLM: "auto" (only when it is an OpenAI-compatible
    # endpoint: the bundled 135M model cannot follow the prompt), "always", or "never"
    # (rules only). A reply that is not a JSON list of grounded facts falls back to rules.
    LLM_EXTRACTION: str = "auto"
    # Memory extraction starts this long after a turn, so a busy tenant's turns share one
    # Celery task (memory/followups.py).
    EXTRACTION_DELAY_SECONDS: float = 2.0
    # Messages that fell out of working memory are compacted in batches of at least this.
    COMPACTION_MIN_MESSAGES: int = 8
    SUMMARY_PROMPT_VERSION: str = "v1"
    SUMMARY_MAX_TOKENS: int = 300
    # A session with no activity for this long gets its session summary.
    IDLE_SUMMARY_SECONDS: int = 1800


@functools.cache
def memory_settings() -> MemorySettings:
    """Built once and kept; a test's override_settings of MEMORY clears it (below)."""
    overrides: dict[str, Any] = getattr(settings, "MEMORY", {})
    return MemorySettings(**overrides)


@receiver(setting_changed)
def _forget_settings(*, setting: str, **kwargs: Any) -> None:
    if setting == "MEMORY":
        memory_settings.cache_clear()
