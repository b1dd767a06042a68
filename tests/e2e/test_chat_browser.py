"""The end user's chat page in a real browser (Playwright driving Debian's chromium)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agentplatform.devtools.testing import Server
from agents.client_tokens import client_token_mint
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
