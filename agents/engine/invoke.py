"""Stateless mode: the client sends the whole context and gets the updated state back.

Nothing about the caller is written anywhere: no row, no Redis key, no lease.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from agents.engine.context import llm_messages, working_memory_budget
from agents.engine.ports import WorkingMemory, WorkingMessage, state_backend
from agents.engine.turn import TASK_STATE_TOOL
from agents.llm import backend_for, options_for
from agents.llm.base import ChatMessage, Done, Usage
from agents.models import Agent


@dataclass(frozen=True)
class InvokeResult:
    message: dict[str, str]
    messages: list[dict[str, str]]
    task_state: dict[str, Any]
    usage: Usage | None


def invoke_stateless(
    *,
    agent: Agent,
    messages: list[dict[str, str]],
    user_config: dict[str, Any],
    task_state: dict[str, Any],
) -> InvokeResult:
    backend = backend_for(agent)
    memory = WorkingMemory(
        messages=[
            WorkingMessage(index, m["role"], m["content"], backend.count_tokens(m["content"]))
            for index, m in enumerate(messages, start=1)
        ],
        task_state=task_state,
    )
    context = state_backend().fit_working_memory(memory=memory, budget=working_memory_budget(agent))
    prompt = llm_messages(agent, context)
    if user_config:
        profile = json.dumps(user_config, sort_keys=True)
        prompt.insert(1 if agent.system_prompt else 0, ChatMessage("system", f"User: {profile}"))
    done: Done | None = None
    for event in backend.stream(prompt, options_for(agent)):
        if isinstance(event, Done):
            done = event
    assert done is not None, "a backend always ends its stream with Done"
    updated = dict(task_state)
    for call in done.tool_calls:
        if call.name == TASK_STATE_TOOL:
            updated.update(call.arguments)
    reply = {"role": "assistant", "content": done.text}
    return InvokeResult(reply, [*messages, reply], updated, done.usage)
