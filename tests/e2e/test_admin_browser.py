"""An operator rolls a session back from the inspector, in a real browser (Playwright
driving Debian's chromium). Screenshots go to artifacts/."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agentplatform.devtools.testing import Server
from agents.engine.turn import TurnResult, turn_run
from agents.llm.scripted import ScriptedBackend, Step
from agents.models import Message
from memory.models import Checkpoint
from tests.conftest import Persona
from tests.e2e.conftest import ARTIFACTS, CHROMIUM

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
]


@pytest.fixture
def server() -> Iterator[Server]:
    live = Server({})
    yield live
    live.stop()


@pytest.fixture
def conversation(alice: Persona, llm: ScriptedBackend) -> TurnResult:
    """Three turns, before the browser starts (Playwright's loop forbids the ORM after)."""
    llm.script(
        Step(reply="Hello Ada, nice to meet you."),
        Step(reply="Your order 4411 ships on Friday."),
        Step(reply="Cancelled order 4411 (a mistake)."),
    )
    first = turn_run(session=alice.session, content="Hi, I am Ada.")
    turn_run(session=alice.session, content="When does order 4411 ship?")
    turn_run(session=alice.session, content="Cancel it")
    assert first.checkpoint is not None
    return first


def _in_thread(query: Callable[[], object]) -> object:
    with ThreadPoolExecutor(1) as pool:
        # In a copy of this context, so the query runs in the test's (cross-tenant) scope.
        return pool.submit(contextvars.copy_context().run, query).result()


def test_an_operator_rolls_back_from_the_inspector(
    alice: Persona, conversation: TurnResult, server: Server, browser
) -> None:
    first = conversation
    assert first.checkpoint is not None
    ARTIFACTS.mkdir(exist_ok=True)

    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(f"{server.url}/admin/login/?next=/admin/")
    page.fill("#id_username", alice.operator.username)
    page.fill("#id_password", "pw-alice")
    page.click("input[type=submit]")
    page.wait_for_url(f"{server.url}/admin/")
    assert page.locator("#console-charts figure").count() == 4
    page.screenshot(path=str(ARTIFACTS / "admin-index.png"), full_page=True)

    page.goto(f"{server.url}/admin/agents/session/{alice.session.pk}/inspect/")
    assert page.locator("#timeline tr.status-active").count() == 6
    page.locator("#contexts details").first.click()
    page.screenshot(path=str(ARTIFACTS / "inspector.png"), full_page=True)

    row = page.locator(f'#checkpoints tr[data-checkpoint="{first.checkpoint.id}"]')
    row.get_by_text("Roll back to here").click()
    page.wait_for_url("**/rollback/")
    assert page.get_by_text("Cancelled order 4411").count() == 1  # listed as to be undone
    page.screenshot(path=str(ARTIFACTS / "rollback-confirm.png"), full_page=True)
    page.get_by_role("button", name="Yes, roll back").click()

    page.wait_for_url("**/inspect/")
    assert page.locator("#timeline tr.status-rolled_back").count() == 4
    assert page.locator("#timeline tr.status-active").count() == 2
    page.screenshot(path=str(ARTIFACTS / "inspector-after-rollback.png"), full_page=True)
    rolled_back = Message.objects.filter(session=alice.session, status="rolled_back")
    assert _in_thread(rolled_back.count) == 4
    manual = Checkpoint.objects.filter(session=alice.session, kind="manual")
    assert _in_thread(manual.count) == 1
