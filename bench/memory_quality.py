"""Memory quality on fixture conversations with known facts (bench/fixtures/).

Each conversation states four facts early (one of them twice, in other words), then
chats for 30 turns on other topics with a small budget; a new session of the same end
user then asks about each fact. Measured:
- fact recall: the fact is in the context the LLM receives for the question;
- duplicate rate: memories of an end user that say the same as another of them;
- summary fact retention: the share of the source's key facts (names, numbers) a session
  summary keeps, when the LLM's summary drops them (the extractive fallback's guarantee).
Targets: recall >= 0.9, duplicates < 5%, retention >= 0.95. Saves
bench/results/memory_quality.json.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save, setup_django

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "memory_quality.json"


def main() -> None:
    setup_django(CELERY_TASK_ALWAYS_EAGER="1")
    from agentplatform.core.audit import SYSTEM
    from agentplatform.core.services import tenant_create
    from agents.engine.turn import turn_run
    from agents.llm.scripted import Step, scripted_backend
    from agents.models import Session
    from agents.services import agent_create, session_open

    scripted_backend.reset(record=True)  # the recall check reads what the LLM was sent
    from memory.facts import key_facts, missing_facts
    from memory.models import Memory, Summary
    from memory.tasks import summarize_session

    tenant, _ = tenant_create(actor=SYSTEM, slug=f"quality-{uuid.uuid4().hex[:8]}")
    agent = agent_create(
        actor=SYSTEM, tenant=tenant, name="q", system_prompt="Be brief.", context_token_budget=700
    )
    conversations = json.loads(FIXTURES.read_text())["conversations"]
    recalled, asked, retention = 0, 0, []
    duplicates, memories = 0, 0
    for conversation in conversations:
        user = conversation["user_id"]
        first = _session(
            session_open(actor=SYSTEM, tenant=tenant, agent=agent, user_id=user), Session
        )
        for statement in conversation["statements"]:
            turn_run(session=first, content=statement)
        for index in range(conversation["filler"]):
            turn_run(session=first, content=f"Tell me one thing about topic {index}.")
        # The LLM's session summary drops every fact: the fallback must keep them.
        scripted_backend.script(Step(reply="They chatted."), Step(reply="A conversation."))
        summarize_session(str(first.pk))
        summary = Summary.objects.get(session=first, kind="session")
        source = " ".join(conversation["statements"])
        facts = key_facts(source)
        retention.append(1 - len(missing_facts(facts, summary.text)) / max(1, len(facts)))
        later = _session(
            session_open(actor=SYSTEM, tenant=tenant, agent=agent, user_id=user), Session
        )
        for question, fact in conversation["questions"]:
            turn_run(session=later, content=question)
            prompt = "\n".join(m.content for m in scripted_backend.calls[-1])
            hit = fact.lower() in prompt.lower()
            recalled += hit
            if not hit:
                print(f"  missed {fact!r} for {question!r}")
            asked += 1
        texts = list(
            Memory.objects.filter(tenant=tenant, user_id=user).values_list("text", flat=True)
        )
        memories += len(texts)
        duplicates += _duplicates(texts)
    results: dict[str, Any] = {
        "conversations": len(conversations),
        "fact_recall": round(recalled / asked, 3),
        "memories": memories,
        "duplicate_rate": round(duplicates / max(1, memories), 3),
        "summary_fact_retention": round(sum(retention) / len(retention), 3),
    }
    print(json.dumps(results, indent=2))
    save("memory_quality", results)
    tenant.delete()


def _session(session: Any, model: Any) -> Any:
    return model.objects.select_related("agent").get(pk=session.pk)


def _duplicates(texts: list[str]) -> int:
    """Memories whose text, lower-cased and stripped of punctuation, another one repeats,
    or that embed within the dedup threshold of another with the same key facts."""
    from memory.conf import memory_settings
    from memory.embeddings import get_embedder
    from memory.facts import key_facts

    if len(texts) < 2:
        return 0
    vectors = get_embedder().embed(texts)
    similar = vectors @ vectors.T
    threshold = memory_settings().DEDUP_THRESHOLD
    count = 0
    for i in range(len(texts)):
        for j in range(i):
            if similar[i, j] >= threshold and key_facts(texts[i]) == key_facts(texts[j]):
                count += 1
                break
    return count


if __name__ == "__main__":
    main()
