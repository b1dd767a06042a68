"""Celery on RabbitMQ (CELERY_BROKER_URL=amqp://...), with a real broker and real worker
processes on loopback: extraction and summaries run end to end, a worker SIGKILLed
mid-task has its task delivered again exactly once, every task lands on the queue of its
kind, and a flood of one kind does not hold back another."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from celery import Celery
from django.conf import settings
from kombu import Connection

from agentplatform.devtools.testing import Server, Worker, wait_until
from agentplatform.project.celery import app as celery_app
from agentplatform.project.celery_queues import (
    DEFAULT_QUEUE,
    QUEUE_NAMES,
    ROUTES,
    broker_transport_options,
)
from agents.engine.turn import turn_run
from memory.models import Memory, Summary
from tests.conftest import Persona

pytestmark = [pytest.mark.chaos, pytest.mark.django_db(transaction=True)]
SLOW_SUMMARY = " ".join(f"point{i}" for i in range(60))  # 60 deltas x 0.1 s: killable
SUMMARIZE = "memory.summarize_session"
EXTRACT = "memory.extract_pending"


@pytest.fixture
def sender(amqp_url: str) -> Iterator[Celery]:
    """A Celery app with the platform's configuration (routes, queues) on the test's virtual
    host: what a web process with CELERY_BROKER_URL set sends through."""
    app = Celery("sender", set_as_current=False)
    app.config_from_object("django.conf:settings", namespace="CELERY")
    options = broker_transport_options(amqp_url, key_prefix="unused", visibility_timeout=1)
    app.conf.update(broker_url=amqp_url, broker_transport_options=options, task_always_eager=False)
    yield app
    app.close()


def _queue(url: str, name: str) -> tuple[int, int]:
    """(messages ready, consumers) of a queue: a message a worker holds is not ready."""
    with Connection(url) as connection:
        declared = connection.default_channel.queue_declare(queue=name, passive=True)
        return declared.message_count, declared.consumer_count


def _log_lines(log: Path, task_id: str, event: str) -> int:
    """How many times a worker's log says the task was `received` or `succeeded`."""
    text = log.read_text() if log.exists() else ""
    return sum(1 for line in text.splitlines() if f"[{task_id}] {event}" in line)


def _summarized(persona: Persona) -> bool:
    return Summary.objects.filter(session=persona.session, kind="session").exists()


def _worker(amqp_url: str, logfile: Path | None = None, **env: str) -> Worker:
    return Worker(
        {"CELERY_BROKER_URL": amqp_url, "SCRIPTED_LLM_REPLY": SLOW_SUMMARY, **env},
        logfile=logfile,
    )


def test_every_task_is_routed_to_a_queue_of_its_kind() -> None:
    registered = {name for name in celery_app.tasks if not name.startswith("celery.")}
    assert registered == set(ROUTES), "route a new task in agentplatform/project/celery_queues.py"
    for name, queue in ROUTES.items():
        assert celery_app.amqp.router.route({}, name)["queue"].name == queue


def test_each_task_name_lands_on_its_queue(amqp_url: str, sender: Celery) -> None:
    for name in ROUTES:  # no worker runs: the messages stay where they landed
        sender.send_task(name, args=["00000000-0000-0000-0000-000000000000"])
    sender.send_task("not.routed")
    for queue in QUEUE_NAMES:
        expected = sum(1 for routed in ROUTES.values() if routed == queue)
        assert _queue(amqp_url, queue)[0] == expected + (queue == DEFAULT_QUEUE), queue


def test_extraction_and_summaries_run_on_rabbitmq(
    alice: Persona, amqp_url: str, sender: Celery
) -> None:
    server = Server({"CELERY_BROKER_URL": amqp_url, "CELERY_TASK_ALWAYS_EAGER": "0"})
    worker = _worker(amqp_url, SCRIPTED_LLM_DELAY="0")
    try:
        response = requests.post(
            f"{server.url}/api/v1/sessions/{alice.session.pk}/messages/",
            json={"content": "My name is Ada."},
            headers={"Authorization": f"Bearer {alice.api_key}"},
            timeout=60,
        )
        assert response.status_code == 201, response.text
        # The web process sent the extraction to RabbitMQ; the worker stored the fact.
        wait_until(
            lambda: Memory.objects.filter(tenant=alice.tenant, text__icontains="Ada").exists(),
            what="the memory extracted by the worker",
            timeout=90,
        )
        sender.send_task(SUMMARIZE, args=[str(alice.session.pk)])
        wait_until(lambda: _summarized(alice), what="the session summary", timeout=90)
    finally:
        worker.stop()
        server.stop()


def test_a_worker_killed_mid_task_has_it_delivered_again_exactly_once(
    alice: Persona, llm: object, amqp_url: str, sender: Celery, tmp_path: Path
) -> None:
    for content in ("My name is Ada.", "I live in Lisbon.", "Thanks!"):
        turn_run(session=alice.session, content=content)
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    first = _worker(amqp_url, first_log, SCRIPTED_LLM_DELAY="0.1")
    try:
        task_id = sender.send_task(SUMMARIZE, args=[str(alice.session.pk)]).id
        # It holds the task (unacknowledged: acks_late) and streams the 6-second summary.
        wait_until(
            lambda: _log_lines(first_log, task_id, "received") == 1,
            what="the first worker to take the task",
            timeout=90,
        )
        assert _queue(amqp_url, "summaries")[0] == 0
        assert not _summarized(alice)
    finally:
        first.kill()
    # RabbitMQ put the message back when the dead worker's connection closed.
    second = _worker(amqp_url, second_log, SCRIPTED_LLM_DELAY="0.1")
    try:
        wait_until(lambda: _summarized(alice), what="the task delivered again", timeout=90)
        wait_until(
            lambda: _log_lines(second_log, task_id, "succeeded") == 1,
            what="the second worker to acknowledge the task",
            timeout=30,
        )
    finally:
        second.stop()  # a warm shutdown: anything still held would go back to the queue
    assert _log_lines(first_log, task_id, "succeeded") == 0
    assert _log_lines(second_log, task_id, "received") == 1
    assert _queue(amqp_url, "summaries")[0] == 0, "delivered more than twice"
    assert Summary.objects.filter(session=alice.session, kind="session").count() == 1


def test_a_flood_of_extraction_does_not_hold_back_a_summary(
    alice: Persona, llm: object, amqp_url: str, sender: Celery, tmp_path: Path
) -> None:
    turn_run(session=alice.session, content="My name is Ada.")
    flood = 100  # each a cheap pass over an empty pending list
    for _ in range(flood):
        sender.send_task(EXTRACT, args=[str(alice.tenant.pk)])
    task_id = sender.send_task(SUMMARIZE, args=[str(alice.session.pk)]).id
    log = tmp_path / "worker.log"
    worker = _worker(amqp_url, log, SCRIPTED_LLM_DELAY="0.05")  # one process, all queues
    try:
        wait_until(
            lambda: _log_lines(log, task_id, "received") == 1,
            what="the worker to take the summary",
            timeout=90,
        )
        # It holds one message at a time (prefetch 1): while it summarizes, the rest of
        # the flood waits. Behind one shared queue the summary would come after all of it.
        left, _ = _queue(amqp_url, "extraction")
        assert left > 0, "the summary waited for the whole flood"
        wait_until(lambda: _summarized(alice), what="the session summary", timeout=90)
    finally:
        worker.stop()


def test_a_worker_given_worker_queues_consumes_only_those(
    alice: Persona, llm: object, amqp_url: str, sender: Celery
) -> None:
    turn_run(session=alice.session, content="My name is Ada.")
    for _ in range(20):
        sender.send_task(EXTRACT, args=[str(alice.tenant.pk)])
    sender.send_task(SUMMARIZE, args=[str(alice.session.pk)])
    worker = _worker(amqp_url, SCRIPTED_LLM_DELAY="0", WORKER_QUEUES="summaries")
    try:
        wait_until(lambda: _summarized(alice), what="the session summary", timeout=90)
        assert _queue(amqp_url, "summaries")[1] == 1
        assert _queue(amqp_url, "extraction") == (20, 0)
    finally:
        worker.stop()


def test_the_default_broker_is_redis() -> None:
    assert settings.CELERY_BROKER_URL == settings.REDIS_URL
