"""Webhooks: endpoints through the API, publishing, signing, the attempt rules (retry, 410,
redirects, refused addresses), rotation, redelivery, the sweep and the console. Deliveries
go to a real receiver on loopback; the attempts are made in this process, one call each
(tests/e2e/test_webhook_delivery.py runs them in a real Celery worker)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from agentplatform.core.audit import SYSTEM
from agentplatform.core.webhook_delivery import (
    deliveries_due,
    delivery_attempt,
    retry_delay,
    webhook_events_purge,
)
from agentplatform.core.webhooks import event_publish, webhook_endpoint_create
from agentplatform.models import AuditEvent, WebhookDelivery, WebhookEndpoint, WebhookEvent
from agents.engine.turn import turn_run
from memory.summaries import session_summarize
from tests.conftest import Persona
from tests.loopback import Received, Receiver, Reply, receiver

pytestmark = pytest.mark.django_db
COMPLETED = "run.completed"


@pytest.fixture
def fast_retries(settings: Any) -> None:
    settings.WEBHOOKS = {"RETRY_SCHEDULE": (0, 0, 0), "JITTER": 0}


@pytest.fixture
def hook() -> Iterator[Receiver]:
    with receiver() as server:
        yield server


def _endpoint(persona: Persona, url: str, events: list[str] | None = None) -> tuple[Any, str]:
    created = persona.client().post(
        "/api/v1/webhooks/", {"url": url, "events": events or [COMPLETED]}, format="json"
    )
    assert created.status_code == 201, created.content
    body = created.json()
    return WebhookEndpoint.objects.get(pk=body["id"]), body["secret"]


def _publish(persona: Persona, data: dict[str, Any] | None = None) -> WebhookEvent:
    event = event_publish(tenant_id=persona.tenant.pk, type=COMPLETED, data=data or {"run": "r1"})
    assert event is not None
    return event


def _attempt(event: WebhookEvent) -> str | None:
    return delivery_attempt(delivery_id=event.deliveries.get().pk)


def _verified(secret: str, request: Received) -> Any:
    return Webhook(secret).verify(request.body, request.headers)


def _answers(*statuses: int, headers: dict[str, str] | None = None) -> Callable[..., Reply]:
    """Answer these statuses in turn, then 200."""
    queue = list(statuses)
    return lambda request: Reply(queue.pop(0) if queue else 200, b"", headers or {})


# --- the API ------------------------------------------------------------------------------


def test_the_secret_is_shown_once_and_kept_only_encrypted(alice: Persona) -> None:
    endpoint, secret = _endpoint(alice, "https://hooks.example.com/in?token=abc")
    assert secret.startswith("whsec_") and len(Webhook(secret)._whsecret) == 32
    client = alice.client()
    for path in ("/api/v1/webhooks/", f"/api/v1/webhooks/{endpoint.pk}/"):
        page = client.get(path).content.decode()
        assert "whsec_" not in page and secret[6:] not in page
    assert secret not in endpoint.secret_ciphertext
    audit = AuditEvent.objects.get(action="webhook.created")
    assert audit.payload == {"host": "hooks.example.com", "events": [COMPLETED]}


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"url": "ftp://hooks.example.com/", "events": [COMPLETED]}, "#/url"),
        ({"url": "http://10.0.0.8/in", "events": [COMPLETED]}, "#/url"),
        ({"url": "http://169.254.169.254/latest/", "events": [COMPLETED]}, "#/url"),
        ({"url": "http://[::ffff:127.0.0.1]/", "events": [COMPLETED]}, "#/url"),
        ({"url": "http://localhost:8000/", "events": [COMPLETED]}, "#/url"),
        ({"url": "https://u:p@hooks.example.com/", "events": [COMPLETED]}, "#/url"),
        ({"url": "https://hooks.example.com/", "events": ["run.exploded"]}, "#/events"),
        ({"url": "https://hooks.example.com/", "events": []}, "#/events"),
        ({"url": "https://hooks.example.com/", "events": ["webhook.test"]}, "#/events"),
        ({"url": "https://hooks.example.com/", "events": [COMPLETED], "secret": "x"}, "#/secret"),
    ],
)
def test_bad_input_is_a_422_problem_naming_the_field(
    alice: Persona, settings: Any, body: dict[str, Any], pointer: str
) -> None:
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    response = alice.client().post("/api/v1/webhooks/", body, format="json")
    assert response.status_code == 422
    assert response["Content-Type"] == "application/problem+json"
    assert any(e["pointer"].startswith(pointer) for e in response.json()["errors"])
    assert not WebhookEndpoint.objects.exists()


def test_malformed_json_is_a_400_problem(alice: Persona) -> None:
    response = alice.client().post(
        "/api/v1/webhooks/", "{not json", content_type="application/json"
    )
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"


def test_patch_checks_the_url_and_reenabling_clears_the_reason(
    alice: Persona, settings: Any
) -> None:
    endpoint, _ = _endpoint(alice, "https://hooks.example.com/in")
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    client, path = alice.client(), f"/api/v1/webhooks/{endpoint.pk}/"
    refused = client.patch(path, {"url": "http://192.168.1.10/"}, format="json")
    assert refused.status_code == 422
    paused = client.patch(path, {"enabled": False}, format="json").json()
    assert (paused["enabled"], paused["disabled_reason"]) == (False, "Disabled by the tenant.")
    resumed = client.patch(path, {"enabled": True, "events": [COMPLETED, "run.failed"]},
                           format="json").json()  # fmt: skip
    assert (resumed["enabled"], resumed["disabled_reason"]) == (True, "")
    assert resumed["events"] == [COMPLETED, "run.failed"]
    assert client.delete(path).status_code == 204
    assert not WebhookEndpoint.objects.filter(pk=endpoint.pk).exists()


def test_another_tenants_endpoint_and_deliveries_are_404(alice: Persona, bob: Persona) -> None:
    endpoint, _ = _endpoint(bob, "https://hooks.example.com/in")
    delivery = _publish(bob).deliveries.get()
    client, base = alice.client(), f"/api/v1/webhooks/{endpoint.pk}"
    for method, path in [("get", f"{base}/"), ("patch", f"{base}/"), ("delete", f"{base}/"),
                         ("post", f"{base}/rotate-secret/"), ("post", f"{base}/test/"),
                         ("get", f"{base}/deliveries/"),
                         ("get", f"{base}/deliveries/{delivery.pk}/"),
                         ("post", f"{base}/deliveries/{delivery.pk}/redeliver/")]:  # fmt: skip
        response = getattr(client, method)(path, {}, format="json")
        assert response.status_code == 404, (method, path)
    assert WebhookEndpoint.objects.filter(pk=endpoint.pk, enabled=True).exists()


# --- publishing ---------------------------------------------------------------------------


def test_an_event_goes_to_each_enabled_subscribed_endpoint_once(alice: Persona) -> None:
    assert event_publish(tenant_id=alice.tenant.pk, type=COMPLETED, data={}) is None
    assert not WebhookEvent.objects.exists()  # nobody listens: nothing stored
    listening, _ = _endpoint(alice, "https://a.example.com/", [COMPLETED, "run.failed"])
    paused, _ = _endpoint(alice, "https://b.example.com/", [COMPLETED])
    _endpoint(alice, "https://c.example.com/", ["run.failed"])
    paused.enabled = False
    paused.save()
    event = _publish(alice, {"run": "r9"})
    assert event.id.startswith("msg_") and len(event.id) == 30
    assert [d.endpoint_id for d in event.deliveries.all()] == [listening.pk]
    assert json.loads(event.body)["data"] == {"run": "r9"}
    with pytest.raises(ValueError, match="unknown webhook event type"):
        event_publish(tenant_id=alice.tenant.pk, type="run.exploded", data={})


def test_a_stored_summary_publishes_session_summarized(alice: Persona, hook: Receiver) -> None:
    _, secret = _endpoint(alice, hook.url, ["session.summarized"])
    turn_run(session=alice.session, content="My order number is 4417.")
    summary = session_summarize(session=alice.session)
    assert summary is not None
    event = WebhookEvent.objects.get(type="session.summarized")
    assert json.loads(event.body)["data"] == {
        "session": str(alice.session.pk), "summary": str(summary.pk), "kind": "session",
        "first_seq": 1, "last_seq": 2,
    }  # fmt: skip
    assert _attempt(event) == "succeeded"
    assert _verified(secret, hook.received[0])["type"] == "session.summarized"


# --- attempts -----------------------------------------------------------------------------


def test_a_delivery_is_signed_as_standard_webhooks_receivers_verify(
    alice: Persona, hook: Receiver
) -> None:
    _, secret = _endpoint(alice, f"{hook.url}/in")
    event = _publish(alice, {"run": "r1", "status": "completed"})
    assert _attempt(event) == "succeeded"
    (request,) = hook.received
    assert request.headers["webhook-id"] == event.id
    assert request.headers["content-type"] == "application/json"
    payload = _verified(secret, request)
    assert payload["type"] == COMPLETED and payload["data"] == {"run": "r1", "status": "completed"}
    tampered = Received(request.method, request.path, request.headers, request.body + b" ")
    with pytest.raises(WebhookVerificationError):
        _verified(secret, tampered)
    assert _attempt(event) is None  # settled: a duplicate message does nothing


def test_failures_are_retried_with_the_same_webhook_id_until_delivered(
    alice: Persona, fast_retries: None
) -> None:
    with receiver(_answers(503, 500, 429)) as hook:
        _, secret = _endpoint(alice, hook.url)
        event = _publish(alice)
        outcomes = [_attempt(event) for _ in range(4)]
    assert outcomes == ["pending", "pending", "pending", "succeeded"]
    assert {r.headers["webhook-id"] for r in hook.received} == {event.id}
    assert all(_verified(secret, r) for r in hook.received)
    delivery = event.deliveries.get()
    assert [a.status_code for a in delivery.log.all()] == [503, 500, 429, 200]
    assert (delivery.attempts, delivery.last_status_code, delivery.next_attempt_at) == (
        4,
        200,
        None,
    )


def test_the_delivery_fails_when_the_schedule_runs_out(alice: Persona, settings: Any) -> None:
    settings.WEBHOOKS = {"RETRY_SCHEDULE": (0,), "JITTER": 0}
    with receiver(lambda r: Reply(500)) as hook:
        _endpoint(alice, hook.url)
        event = _publish(alice)
        assert [_attempt(event) for _ in range(3)] == ["pending", "failed", None]
    assert len(hook.received) == 2


def test_retry_waits_grow_with_jitter_and_honour_retry_after_within_a_bound(
    alice: Persona, settings: Any
) -> None:
    settings.WEBHOOKS = {"RETRY_SCHEDULE": (5, 300), "JITTER": 0.2,
                         "RETRY_AFTER_MAX_SECONDS": 3600}  # fmt: skip
    first = [retry_delay(1) for _ in range(50)]
    assert all(4 <= d <= 6 for d in first if d) and len(set(first)) > 1
    assert 240 <= (retry_delay(2) or 0) <= 360 and retry_delay(3) is None
    assert retry_delay(1, retry_after=120) == 120
    assert retry_delay(1, retry_after=10**9) == 3600
    with receiver(_answers(503, headers={"Retry-After": "600"})) as hook:
        _endpoint(alice, hook.url)
        event = _publish(alice)
        before = timezone.now()
        assert _attempt(event) == "pending"
    due = event.deliveries.get().next_attempt_at
    assert due is not None and timedelta(seconds=599) < due - before < timedelta(seconds=602)


def test_410_gone_disables_the_endpoint_and_cancels_what_waits(alice: Persona) -> None:
    with receiver(lambda r: Reply(410)) as hook:
        endpoint, _ = _endpoint(alice, hook.url)
        gone, waiting = _publish(alice), _publish(alice)
        assert _attempt(gone) == "failed"
        assert _attempt(waiting) is None
    endpoint.refresh_from_db()
    assert not endpoint.enabled and "410 Gone" in endpoint.disabled_reason
    assert waiting.deliveries.get().status == WebhookDelivery.Status.CANCELLED
    assert len(hook.received) == 1
    disabled = AuditEvent.objects.get(action="webhook.disabled")
    assert (disabled.actor_kind, disabled.target_id) == (SYSTEM.kind, str(endpoint.pk))
    assert event_publish(tenant_id=alice.tenant.pk, type=COMPLETED, data={}) is None


def test_a_redirect_is_not_followed_and_counts_as_a_failure(alice: Persona) -> None:
    def answer(request: Received) -> Reply:
        if request.path == "/moved":
            return Reply(200)
        return Reply(307, b"", {"Location": "/moved"})

    with receiver(answer) as hook:
        _endpoint(alice, f"{hook.url}/in")
        event = _publish(alice)
        assert _attempt(event) == "pending"
    assert [r.path for r in hook.received] == ["/in"]
    delivery = event.deliveries.get()
    assert delivery.last_status_code == 307 and "not followed" in delivery.last_error


def test_a_refused_address_fails_at_once_and_says_why(
    alice: Persona, hook: Receiver, settings: Any
) -> None:
    _endpoint(alice, hook.url)  # saved while the deployment allowed loopback
    settings.OUTBOUND_ALLOWED_NETWORKS = []
    event = _publish(alice)
    assert _attempt(event) == "failed"
    assert hook.received == []
    assert "not a public address" in event.deliveries.get().last_error


def test_an_unreachable_receiver_is_retried(alice: Persona, fast_retries: None) -> None:
    with receiver() as hook:
        url = hook.url
    _endpoint(alice, url)  # nothing listens there any more
    event = _publish(alice)
    assert _attempt(event) == "pending"
    delivery = event.deliveries.get()
    assert delivery.last_status_code is None and "Could not connect" in delivery.last_error


# --- rotation, test pings, redelivery, the log ----------------------------------------------


def test_after_rotation_both_secrets_sign_until_the_old_one_expires(
    alice: Persona, hook: Receiver
) -> None:
    endpoint, old = _endpoint(alice, hook.url)
    rotated = alice.client().post(f"/api/v1/webhooks/{endpoint.pk}/rotate-secret/", {},
                                  format="json").json()  # fmt: skip
    new = rotated["secret"]
    assert new.startswith("whsec_") and new != old and rotated["previous_secret_expires_at"]
    assert _attempt(_publish(alice)) == "succeeded"
    request = hook.received[-1]
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    assert _verified(old, request) and _verified(new, request)
    # Retired at once: one signature, the old secret no longer verifies.
    alice.client().post(f"/api/v1/webhooks/{endpoint.pk}/rotate-secret/",
                        {"previous_secret_valid_seconds": 0}, format="json")  # fmt: skip
    endpoint.refresh_from_db()
    assert _attempt(_publish(alice)) == "succeeded"
    request = hook.received[-1]
    with pytest.raises(WebhookVerificationError):
        _verified(new, request)
    assert "whsec" not in json.dumps(list(AuditEvent.objects.values_list("payload", flat=True)))


def test_the_test_ping_and_the_delivery_log(alice: Persona, hook: Receiver) -> None:
    endpoint, secret = _endpoint(alice, hook.url)
    client, base = alice.client(), f"/api/v1/webhooks/{endpoint.pk}"
    sent = client.post(f"{base}/test/", {}, format="json")
    assert sent.status_code == 202
    delivery = sent.json()
    assert (delivery["event"]["type"], delivery["status"]) == ("webhook.test", "pending")
    assert delivery_attempt(delivery_id=delivery["id"]) == "succeeded"
    assert _verified(secret, hook.received[0])["type"] == "webhook.test"
    log = client.get(f"{base}/deliveries/").json()["results"]
    assert [d["id"] for d in log] == [delivery["id"]]
    (attempt,) = log[0]["attempts"]
    assert attempt["status_code"] == 200 and attempt["number"] == 1
    assert client.get(f"{base}/deliveries/?status=failed").json()["results"] == []
    assert client.get(f"{base}/deliveries/?status=lost").status_code == 422


def test_redelivery_sends_the_same_webhook_id_again(alice: Persona, hook: Receiver) -> None:
    endpoint, _ = _endpoint(alice, hook.url)
    event = _publish(alice)
    delivery = event.deliveries.get()
    assert _attempt(event) == "succeeded"
    path = f"/api/v1/webhooks/{endpoint.pk}/deliveries/{delivery.pk}/redeliver/"
    response = alice.client().post(path, {}, format="json")
    assert response.status_code == 202 and response.json()["status"] == "pending"
    assert _attempt(event) == "succeeded"
    assert [r.headers["webhook-id"] for r in hook.received] == [event.id, event.id]
    assert [a.number for a in delivery.log.all()] == [1, 2]


def test_the_sweep_finds_overdue_deliveries_of_every_tenant(alice: Persona, bob: Persona) -> None:
    for persona in (alice, bob):
        _endpoint(persona, "https://hooks.example.com/in")
    overdue, fresh = _publish(alice), _publish(bob)
    overdue.deliveries.update(next_attempt_at=timezone.now() - timedelta(minutes=5))
    assert deliveries_due() == [str(overdue.deliveries.get().pk)]
    assert str(fresh.deliveries.get().pk) not in deliveries_due()


def test_old_events_are_purged_with_their_log(alice: Persona, settings: Any) -> None:
    _endpoint(alice, "https://hooks.example.com/in")
    old, recent = _publish(alice), _publish(alice)
    WebhookEvent.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=31))
    assert webhook_events_purge() == 1
    assert list(WebhookEvent.objects.values_list("pk", flat=True)) == [recent.pk]
    assert WebhookDelivery.objects.count() == 1


def test_the_console_shows_endpoints_and_deliveries_without_secrets(
    alice: Persona, hook: Receiver
) -> None:
    endpoint, secret = webhook_endpoint_create(
        tenant=alice.tenant, url=hook.url, events=[COMPLETED], actor=SYSTEM
    )
    event = _publish(alice)
    _attempt(event)
    client = Client()
    client.force_login(alice.operator)
    pages = [
        "/admin/agentplatform/webhookendpoint/",
        f"/admin/agentplatform/webhookendpoint/{endpoint.pk}/change/",
        f"/admin/agentplatform/webhookdelivery/?endpoint__id__exact={endpoint.pk}",
        f"/admin/agentplatform/webhookdelivery/{event.deliveries.get().pk}/change/",
    ]
    for page in pages:
        response = client.get(page)
        assert response.status_code == 200, page
        text = response.content.decode()
        assert secret[6:] not in text and endpoint.secret_ciphertext not in text
    assert event.id in text  # the delivery page shows its webhook-id and attempts
