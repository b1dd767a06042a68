"""LLM backends and the choice among them for an agent."""

from __future__ import annotations

import os
import re

from django.conf import settings

from agentplatform.core.vault import SecretUnavailable, secret_value
from agents.conf import agents_settings
from agents.llm.base import GenerationOptions, LLMBackend, LLMError
from agents.models import LLM_KEY_ENV_PATTERN, Agent
from agents.tools import Tool, tool_specs, tools_for

__all__ = ["GenerationOptions", "LLMBackend", "LLMError", "backend_for", "options_for"]


def backend_for(agent: Agent) -> LLMBackend:
    """The backend serving this agent: its own endpoint, the platform's, or the local model."""
    choice = agents_settings().LLM_BACKEND
    if choice == "scripted":
        from agents.llm.scripted import scripted_backend

        return scripted_backend
    endpoint = (agent.llm or {}).get("base_url") or settings.LLM_BASE_URL
    if choice == "openai" or (choice == "auto" and endpoint):
        from agents.llm.openai_compat import OpenAICompatibleBackend

        return OpenAICompatibleBackend()
    from agents.llm.local import local_backend

    return local_backend


def options_for(agent: Agent, tools: dict[str, Tool] | None = None) -> GenerationOptions:
    """The agent's generation settings; `tools` are the ones it may call (by default its
    registered tools: the engine passes the tenant's own tools too)."""
    llm = agent.llm or {}
    return GenerationOptions(
        model=llm.get("model") or settings.LLM_MODEL or "default",
        base_url=llm.get("base_url") or settings.LLM_BASE_URL,
        api_key=_api_key(agent, llm),
        temperature=llm.get("temperature"),
        max_tokens=int(llm.get("max_tokens") or 512),
        tools=tool_specs(tools_for(agent.tools) if tools is None else tools),
    )


def _api_key(agent: Agent, llm: dict) -> str:
    """The tenant's encrypted secret named in `api_key_secret`, or the variable named in
    `api_key_env`, or LLM_API_KEY."""
    if llm.get("api_key_secret"):
        try:
            return secret_value(tenant_id=agent.tenant_id, name=llm["api_key_secret"])
        except SecretUnavailable as error:
            raise LLMError(str(error)) from error
    key_env = llm.get("api_key_env")
    if not key_env:
        return settings.LLM_API_KEY
    if not re.match(LLM_KEY_ENV_PATTERN, key_env):  # stored before the pattern was enforced
        raise LLMError(f"api_key_env must match {LLM_KEY_ENV_PATTERN}.")
    return os.environ.get(key_env, "")
