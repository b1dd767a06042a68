"""Assembling what the LLM sees on a turn, within the agent's token budget."""

from __future__ import annotations

from agents.conf import agents_settings
from agents.engine.ports import WorkingMemory
from agents.llm.base import ChatMessage, estimate_tokens
from agents.models import Agent


def working_memory_budget(agent: Agent) -> int:
    """Tokens left for conversation messages after the system prompt and the reply reserve.

    Uses the documented estimate so the budget is the same on every server and backend.
    """
    reserve = agents_settings().REPLY_RESERVE_TOKENS
    return max(0, agent.context_token_budget - estimate_tokens(agent.system_prompt) - reserve)


def llm_messages(agent: Agent, memory: WorkingMemory) -> list[ChatMessage]:
    """System prompt first, then the working memory in order."""
    messages = [ChatMessage("system", agent.system_prompt)] if agent.system_prompt else []
    messages.extend(ChatMessage(m.role, m.content) for m in memory.messages)
    return messages
