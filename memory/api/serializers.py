from __future__ import annotations

from rest_framework import serializers

from agentplatform.http.serializers import (
    JSONObjectField,
    StrictCharField,
    StrictSerializer,
    sources_field,
)
from memory.models import Checkpoint, Memory, Summary


class MemorySerializer(serializers.ModelSerializer):
    agent = serializers.UUIDField(source="agent_id", allow_null=True, read_only=True)
    sources = sources_field()

    class Meta:
        model = Memory
        fields = [
            "id", "user_id", "agent", "text", "sources", "author", "status",
            "embedding_model", "created_at", "updated_at", "last_retrieved_at",
        ]  # fmt: skip
        read_only_fields = fields


class MemoryFiltersSerializer(serializers.Serializer):
    user_id = StrictCharField(max_length=255, required=False, help_text="Only this user's.")


class MemoryCreateSerializer(StrictSerializer):
    user_id = StrictCharField(min_length=1, max_length=255)
    text = StrictCharField(min_length=1, max_length=2000)
    agent = serializers.UUIDField(required=False, allow_null=True)


class MemorySearchSerializer(StrictSerializer):
    user_id = StrictCharField(min_length=1, max_length=255)
    query = StrictCharField(min_length=1, max_length=2000)
    k = serializers.IntegerField(min_value=1, max_value=50, default=5)
    agent = serializers.UUIDField(required=False, allow_null=True)


class MemoryHitSerializer(serializers.Serializer):
    id = serializers.UUIDField(source="memory.id")
    text = serializers.CharField(source="memory.text")
    score = serializers.FloatField()
    user_id = serializers.CharField(source="memory.user_id")
    sources = sources_field(source="memory.sources")
    created_at = serializers.DateTimeField(source="memory.created_at")


class SummarySerializer(serializers.ModelSerializer):
    session = serializers.UUIDField(source="session_id", read_only=True)

    class Meta:
        model = Summary
        fields = [
            "id", "session", "user_id", "kind", "first_seq", "last_seq", "text", "method",
            "model", "prompt_version", "source_tokens", "summary_tokens", "created_at",
        ]  # fmt: skip
        read_only_fields = fields


class CheckpointSerializer(serializers.ModelSerializer):
    session = serializers.UUIDField(source="session_id", read_only=True)
    parent = serializers.UUIDField(  # type: ignore[assignment]  # `parent` is also a Field attribute
        source="parent_id", read_only=True, allow_null=True
    )
    task_state = JSONObjectField(read_only=True)
    metadata = JSONObjectField(read_only=True)

    class Meta:
        model = Checkpoint
        fields = [
            "id", "session", "parent", "kind", "high_water_seq", "memory_first_seq",
            "memory_tokens", "task_state", "metadata", "created_at",
        ]  # fmt: skip
        read_only_fields = fields


class CheckpointRefSerializer(StrictSerializer):
    checkpoint = serializers.UUIDField()


class RollbackReceiptSerializer(serializers.Serializer):
    checkpoint = serializers.UUIDField(source="checkpoint.pk")
    head = serializers.UUIDField(source="head.pk")
    rolled_back_seqs = serializers.ListField(child=serializers.IntegerField())
    retracted_memories = serializers.ListField(child=serializers.UUIDField())
    removed_summaries = serializers.ListField(child=serializers.UUIDField())
    side_effects = serializers.ListField(child=serializers.JSONField())
