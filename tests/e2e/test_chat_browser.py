"""The end user's chat page in a real browser (Playwright driving Debian's chromium)."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from agentplatform.devtools.testing import Server
from agents.client_tokens import client_token_mint
from agents.models import Agent, Run
from tests.conftest import Persona
from tests.e2e.conftest import ARTIFACTS, CHROMIUM

REPLY = "Streaming works: " + " ".join(f"w{i}" for i in range(40))

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
]


@pytest.fixture
def server() -> Iterator[Server]:
    live = Server({"SCRIPTED_LLM_DELAY": "0.02", "SCRIPTED_LLM_REPLY": REPLY})
    yield live
    live.stop()


def test_chat_streams_survives_reload_and_fans_out_to_a_second_tab(
    alice: Persona, server: Server, browser
) -> None:
    token = client_token_mint(session=alice.session).token
    url = f"{server.url}/chat/{alice.session.pk}/?token={token}"
    page = browser.new_page(viewport={"width": 390, "height": 760})  # a phone-sized screen
    page.goto(url)
    page.wait_for_selector("#status.is-online")

    page.fill("#input", "Hello from the browser")
    page.keyboard.press("Enter")
    streaming = page.wait_for_selector(".msg--assistant.msg--streaming")
    partial = streaming.inner_text()
    assert partial and partial != REPLY, "the reply should appear token by token"
    page.wait_for_selector(".msg--assistant.msg--active")
    assert page.inner_text(".msg--assistant.msg--active .msg__body") == REPLY
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "chat-streamed.png"), full_page=True)

    page.reload()
    page.wait_for_selector("#status.is-online")
    bodies = page.locator(".msg .msg__body").all_inner_texts()
    assert bodies == ["Hello from the browser", REPLY]

    second = browser.new_page()
    second.goto(url)
    second.wait_for_selector("#status.is-online")
    page.fill("#input", "Second question")
    page.keyboard.press("Enter")
    for tab in (page, second):
        # (The page's CSP forbids eval, so poll with locators, not wait_for_function.)
        tab.locator(".msg--assistant.msg--active").nth(1).wait_for()
        assert tab.locator(".msg .msg__body").all_inner_texts()[-2:] == ["Second question", REPLY]
    second.screenshot(path=str(ARTIFACTS / "chat-second-tab.png"), full_page=True)


APPROVAL_SCRIPT = (
    '[{"reply": "", "tool_calls": [{"id": "c1", "name": "close_account",'
    ' "arguments": {"reason": "moving abroad"}}]}, {"reply": "Your account is closed."}]'
)


@pytest.fixture
def approval_agent(alice: Persona) -> Persona:
    """Before the browser starts: Playwright's sync API runs an event loop in this thread,
    where the ORM refuses to run."""
    Agent.objects.filter(pk=alice.agent.pk).update(tools=["close_account"])
    return alice


def _in_thread(function: Callable[[], Any]) -> Any:
    # In a copy of this context: the test's row-level security scope comes along.
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(contextvars.copy_context().run, function).result()


def test_the_end_user_approves_a_call_on_a_card(approval_agent: Persona, browser) -> None:
    alice = approval_agent
    server = Server(
        {
            "SCRIPTED_LLM_SCRIPT": APPROVAL_SCRIPT,
            "AGENTS_TOOLS": "tests.agents.tools.close_account",
            "CELERY_TASK_ALWAYS_EAGER": "1",  # the resumed run runs in the server process
        }
    )
    try:
        token = client_token_mint(session=alice.session).token
        page = browser.new_page(viewport={"width": 390, "height": 760})
        page.goto(f"{server.url}/chat/{alice.session.pk}/?token={token}")
        page.wait_for_selector("#status.is-online")
        page.fill("#input", "Please close my account")
        page.keyboard.press("Enter")
        card = page.wait_for_selector(".action")
        assert "close_account" in card.inner_text()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "chat-approval.png"), full_page=True)
        page.click(".action__button:has-text('Approve')")
        page.locator(".msg--assistant.msg--active", has_text="Your account is closed.").wait_for()
        assert page.locator(".msg .msg__body").all_inner_texts() == [
            "Please close my account",
            "Your account is closed.",
        ]
        page.reload()  # a waiting run's card comes back after a reload; a decided one does not
        page.wait_for_selector("#status.is-online")
        assert page.locator(".action__button").count() == 0
    finally:
        server.stop()
    run = _in_thread(lambda: Run.objects.get(session=alice.session))
    assert run.status == "completed" and run.action_results["c1"]["by"] == "end_user"
