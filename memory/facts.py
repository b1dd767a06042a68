"""Key facts of a text: the numbers, names and dates a summary must keep and two
statements must share to count as the same memory."""

from __future__ import annotations

import re

_NUMBER = re.compile(r"\b\d[\d.,:/-]*\d\b|\b\d\b")
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b")
_CAPITALISED = re.compile(r"\b[A-Z][a-z]+(?:[A-Z][a-z]+)*\b")
# Capitalised words that are not names: sentence starters, pronouns, days and months are
# kept (dates matter), everything here is dropped.
_NOT_NAMES = {
    "I", "The", "A", "An", "My", "Your", "It", "This", "That", "These", "Those", "We", "You",
    "He", "She", "They", "His", "Her", "Their", "Our", "Please", "Remember", "Hi", "Hello",
    "Hey", "Thanks", "Thank", "Yes", "No", "Ok", "Okay", "Sure", "What", "When", "Where",
    "Why", "How", "Who", "Which", "Can", "Could", "Would", "Should", "Will", "Do", "Does",
    "Did", "Is", "Are", "Was", "Were", "And", "But", "Or", "So", "If", "Also", "Just", "Let",
    "User", "Assistant", "Great", "Sounds", "Good", "Sorry", "Here", "There", "Well",
}  # fmt: skip


def key_facts(text: str) -> set[str]:
    """Lower-cased numbers, e-mail addresses and capitalised words that look like names."""
    facts = {m.group(0).rstrip(".,").lower() for m in _NUMBER.finditer(text)}
    facts |= {m.group(0).lower() for m in _EMAIL.finditer(text)}
    facts |= {
        m.group(0).lower() for m in _CAPITALISED.finditer(text) if m.group(0) not in _NOT_NAMES
    }
    return facts


def missing_facts(source_facts: set[str], summary: str) -> set[str]:
    lowered = summary.lower()
    return {fact for fact in source_facts if fact not in lowered}
