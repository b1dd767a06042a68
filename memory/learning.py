"""What the platform learns from end users' messages: the extraction policy.

The agent's LLM extracts facts when it can (an OpenAI-compatible backend, or
`MEMORY["LLM_EXTRACTION"] = "always"`) and its answer holds up (every number and name in it
appears in the message); otherwise the rules of memory.extraction do. Each fact is stored
through memory_upsert, deduplicated and audited there.
"""

from __future__ import annotations

from agentplatform.core.audit import SYSTEM, unaudited
from agents.llm import backend_for, options_for
from agents.llm.base import ChatMessage, Done, LLMError
from agents.llm.openai_compat import OpenAICompatibleBackend
from agents.models import Message
from memory.conf import memory_settings
from memory.extraction import EXTRACTION_PROMPT, extract_facts, parse_llm_facts
from memory.semantic import Source, memory_upsert


@unaudited("each memory it stores is recorded by memory_upsert")
def memories_extract(*, message_ids: list[int]) -> int:
    """Store the facts end users stated in these messages (those the current tenant scope
    can see); returns how many facts were stored or confirmed. Safe to run twice: a fact
    stored again only gains the same source, which is kept once."""
    stored = 0
    messages = Message.objects.filter(pk__in=message_ids, role=Message.Role.USER).select_related(
        "session__tenant", "session__agent"
    )
    for message in messages:
        session = message.session
        for fact in facts_of(message):
            memory_upsert(
                tenant=session.tenant,
                user_id=session.user_id,
                text=fact,
                source=Source("message", message_id=message.pk, session_id=str(session.pk)),
                actor=SYSTEM,
            )
            stored += 1
    return stored


def facts_of(message: Message) -> list[str]:
    """The LLM's extraction when the agent's LLM can do it and its answer holds up;
    otherwise the rules'."""
    agent = message.session.agent
    mode = memory_settings().LLM_EXTRACTION
    uses_llm = mode == "always" or (
        mode == "auto" and isinstance(backend_for(agent), OpenAICompatibleBackend)
    )
    if uses_llm:
        prompt = [ChatMessage("user", EXTRACTION_PROMPT.format(message=message.content))]
        try:
            done = next(
                e
                for e in backend_for(agent).stream(prompt, options_for(agent))
                if isinstance(e, Done)
            )
        except (LLMError, StopIteration):
            done = None
        facts = parse_llm_facts(done.text, message.content) if done else None
        if facts is not None:
            return facts
    return extract_facts(message.content)
