"""Webhooks end to end: events published here are delivered by a real Celery worker process
to a real receiver on loopback, which verifies every signature with `standardwebhooks`, the
library receivers use. Retries run on a schedule of fractions of a second."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from standardwebhooks import Webhook

from agentplatform.core.audit import SYSTEM
from agentplatform.core.webhooks import (
    event_publish,
    webhook_endpoint_create,
    webhook_secret_rotate,
)
from agentplatform.devtools.testing import Worker, wait_until
from agentplatform.models import WebhookDelivery, WebhookEndpoint, WebhookEvent
from agentplatform.project.celery import app as celery_app
from tests.conftest import Persona
from tests.loopback import Received, Receiver, Reply, receiver

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
COMPLETED = "run.completed"


@pytest.fixture
def worker() -> Iterator[Worker]:
    """A worker with a short retry schedule; this process sends it tasks (not eager)."""
    celery_app.conf.task_always_eager = False
    process = Worker({"WEBHOOKS_RETRY_SCHEDULE": "0.2,0.2,0.2,0.2,0.2"})
    yield process
    process.stop()
    celery_app.conf.task_always_eager = True


def _endpoint(persona: Persona, url: str) -> tuple[WebhookEndpoint, str]:
    return webhook_endpoint_create(tenant=persona.tenant, url=url, events=[COMPLETED], actor=SYSTEM)


def _publish(persona: Persona) -> WebhookEvent:
    event = event_publish(tenant_id=persona.tenant.pk, type=COMPLETED, data={"run": "r1"})
    assert event is not None
    return event


def _settled(event: WebhookEvent) -> Callable[[], bool]:
    return lambda: event.deliveries.exclude(status=WebhookDelivery.Status.PENDING).exists()


def _down_then_up(failures: int) -> Callable[[Received], Reply]:
    answered = []

    def answer(request: Received) -> Reply:
        answered.append(request)
        return Reply(503 if len(answered) <= failures else 200)

    return answer


def _verify(secret: str, request: Received) -> Any:
    return Webhook(secret).verify(request.body, request.headers)


def test_a_receiver_down_for_several_attempts_gets_the_event_once_up(
    alice: Persona, worker: Worker
) -> None:
    with receiver(_down_then_up(3)) as hook:
        _, secret = _endpoint(alice, f"{hook.url}/hooks")
        event = _publish(alice)
        wait_until(_settled(event), what="the delivery to settle", timeout=60)
    delivery = event.deliveries.get()
    assert (delivery.status, delivery.attempts) == ("succeeded", 4)
    assert [a.status_code for a in delivery.log.all()] == [503, 503, 503, 200]
    assert {request.headers["webhook-id"] for request in hook.received} == {event.id}
    assert all(_verify(secret, request)["data"] == {"run": "r1"} for request in hook.received)


def test_410_disables_and_a_redirect_is_not_followed(alice: Persona, worker: Worker) -> None:
    def answer(request: Received) -> Reply:
        if request.path == "/gone":
            return Reply(410)
        if request.path == "/moved":
            return Reply(302, b"", {"Location": "/final"})
        return Reply(200)

    with receiver(answer) as hook:
        gone, _ = _endpoint(alice, f"{hook.url}/gone")
        moved, _ = _endpoint(alice, f"{hook.url}/moved")
        event = _publish(alice)
        wait_until(lambda: not event.deliveries.filter(status="pending").exists(),
                   what="both deliveries to settle", timeout=60)  # fmt: skip
    gone.refresh_from_db()
    assert not gone.enabled and "410" in gone.disabled_reason
    redirected = event.deliveries.get(endpoint=moved)
    assert redirected.status == "failed" and redirected.attempts == 6  # the whole schedule
    assert {a.status_code for a in redirected.log.all()} == {302}
    assert "/final" not in {request.path for request in hook.received}


def test_after_rotation_each_message_verifies_with_the_old_and_the_new_secret(
    alice: Persona, worker: Worker
) -> None:
    hook: Receiver
    with receiver() as hook:
        endpoint, old = _endpoint(alice, hook.url)
        _, new = webhook_secret_rotate(endpoint=endpoint, actor=SYSTEM)
        event = _publish(alice)
        wait_until(_settled(event), what="the delivery", timeout=60)
    (request,) = hook.received
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    assert _verify(old, request) == _verify(new, request)
