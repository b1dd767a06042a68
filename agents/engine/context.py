"""Assembling what the LLM sees on a turn, within the agent's token budget."""

from __future__ import annotations

from agents.conf import agents_settings
from agents.engine.ports import WorkingMemory
from agents.llm.base import ChatMessage, estimate_tokens
from agents.models import Agent


def extras_budget(agent: Agent) -> int:
    """Tokens kept for summaries and semantic memories."""
    return int(agent.context_token_budget * agents_settings().CONTEXT_EXTRAS_SHARE)


def working_memory_budget(agent: Agent) -> int:
    """Tokens left for conversation messages after the system prompt, the reply reserve
    and the memory tiers' share.

    A pure function of the agent (the documented estimate, not a backend's tokenizer), so
    it is the same on every server, and a rebuilt working memory equals the cached one.
    """
    conf = agents_settings()
    fixed = estimate_tokens(agent.system_prompt) + conf.REPLY_RESERVE_TOKENS
    return max(0, agent.context_token_budget - fixed - extras_budget(agent))


def llm_messages(
    agent: Agent, memory: WorkingMemory, extras: list[ChatMessage] | None = None
) -> list[ChatMessage]:
    """System prompt, then what the memory tiers add, then the working memory in order."""
    messages = [ChatMessage("system", agent.system_prompt)] if agent.system_prompt else []
    messages.extend(extras or [])
    messages.extend(ChatMessage(m.role, m.content) for m in memory.messages)
    return messages
