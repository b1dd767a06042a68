"""How the engine's records read outside it: a message and a checkpoint as frames and API
payloads, and the compiled context a reply was given (for the operators' inspector)."""

from __future__ import annotations

from typing import Any

from agents.engine.ports import CheckpointRecord, ContextExtras, WorkingMemory
from agents.llm.base import estimate_tokens
from agents.models import Agent, Message


def compiled_record(agent: Agent, context: WorkingMemory, extras: ContextExtras) -> dict[str, Any]:
    """What the LLM received on this turn, by part, for the operators' inspector."""
    system = estimate_tokens(agent.system_prompt)
    seqs = context.written_seqs()
    return {
        "system_prompt_tokens": system,
        "working_memory": {
            "tokens": context.tokens,
            "messages": len(context.messages),
            "first_seq": min(seqs) if seqs else None,
            "last_seq": max(seqs) if seqs else None,
        },
        "extras_tokens": extras.tokens,
        **extras.record,
        "total_tokens": system + context.tokens + extras.tokens,
    }


def checkpoint_payload(checkpoint: CheckpointRecord) -> dict[str, Any]:
    return {
        "id": str(checkpoint.id),
        "kind": checkpoint.kind,
        "high_water_seq": checkpoint.high_water_seq,
    }


def message_payload(message: Message) -> dict[str, Any]:
    return {
        "id": message.pk,
        "seq": message.seq,
        "role": message.role,
        "content": message.content,
        "status": message.status,
        "token_count": message.token_count,
        "created_at": message.created_at.isoformat() if message.created_at else None,
    }
