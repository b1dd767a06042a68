from __future__ import annotations

import pytest
from django.test import override_settings

from agents.llm.scripted import ScriptedBackend, Step
from agents.services import NewMessage, messages_append
from memory.extraction import extract_facts, parse_llm_facts
from memory.models import Memory
from memory.tasks import extract_memories
from tests.conftest import Persona


@pytest.mark.parametrize(
    ("text", "facts"),
    [
        ("My name is Ada.", ["The user's name is Ada."]),
        ("call me Ada please", ["The user's name is Ada."]),
        ("Please remember my order number is 4411", ["The user's order number is 4411."]),
        (
            "I love hiking and I live in Lisbon.",
            ["The user loves hiking.", "The user lives in Lisbon."],
        ),
        ("I'm allergic to peanuts, by the way", ["The user is allergic to peanuts."]),
        ("What a nice day, thanks!", []),
    ],
)
def test_rules_extract_explicit_statements_only(text: str, facts: list[str]) -> None:
    assert extract_facts(text) == facts


def test_llm_facts_must_be_a_json_list_grounded_in_the_message() -> None:
    source = "I moved to Porto last week and my badge is 7731."
    good = '["The user moved to Porto.", "The user\'s badge number is 7731."]'
    assert parse_llm_facts(good, source) == [
        "The user moved to Porto.",
        "The user's badge number is 7731.",
    ]
    assert parse_llm_facts("Sure! The user moved.", source) is None
    assert parse_llm_facts('["The user lives in Paris."]', source) is None  # invented
    assert parse_llm_facts("[1, 2]", source) is None


def _message(persona: Persona, content: str) -> int:
    (row,) = messages_append(session=persona.session, messages=[NewMessage("user", content)])
    return row.pk


@pytest.mark.django_db
@override_settings(MEMORY={"LLM_EXTRACTION": "always"})
def test_the_llms_extraction_is_used_when_it_holds_up(alice: Persona, llm: ScriptedBackend) -> None:
    message_id = _message(alice, "Moved to Porto last week; badge 7731.")
    llm.script(Step(reply='["The user moved to Porto.", "The user has badge 7731."]'))
    extract_memories([message_id])
    texts = set(Memory.objects.filter(tenant=alice.tenant).values_list("text", flat=True))
    assert texts == {"The user moved to Porto.", "The user has badge 7731."}
    memory = Memory.objects.get(text="The user moved to Porto.")
    assert memory.sources[0]["message_id"] == message_id


@pytest.mark.django_db
@override_settings(MEMORY={"LLM_EXTRACTION": "always"})
def test_an_llm_that_invents_falls_back_to_the_rules(alice: Persona, llm: ScriptedBackend) -> None:
    message_id = _message(alice, "My name is Ada.")
    llm.script(Step(reply='["The user\'s name is Beatrice."]'))
    extract_memories([message_id])
    texts = list(Memory.objects.filter(tenant=alice.tenant).values_list("text", flat=True))
    assert texts == ["The user's name is Ada."]


@pytest.mark.django_db
def test_auto_mode_uses_rules_with_the_scripted_or_local_model(
    alice: Persona, llm: ScriptedBackend
) -> None:
    message_id = _message(alice, "I live in Lisbon.")
    extract_memories([message_id])
    assert not llm.calls
    assert Memory.objects.get(tenant=alice.tenant).text == "The user lives in Lisbon."
