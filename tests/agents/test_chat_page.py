from __future__ import annotations

import json

import pytest
from django.test import Client

from agents.client_tokens import client_token_mint, client_token_verify
from agents.services import NewMessage, messages_append
from tests.conftest import Persona

pytestmark = pytest.mark.django_db


def _config(response) -> dict:
    html = response.content.decode()
    start = html.index('<script id="chat-config" type="application/json">') + len(
        '<script id="chat-config" type="application/json">'
    )
    return json.loads(html[start : html.index("</script>", start)])


def test_a_token_link_opens_the_page_with_the_history(alice: Persona) -> None:
    messages_append(
        session=alice.session,
        messages=[NewMessage("user", "<b>hi</b>"), NewMessage("assistant", "hello")],
    )
    token = client_token_mint(session=alice.session).token
    response = Client().get(f"/chat/{alice.session.pk}/?token={token}")
    assert response.status_code == 200
    config = _config(response)
    assert [m["content"] for m in config["history"]] == ["<b>hi</b>", "hello"]
    assert "<b>hi</b>" not in response.content.decode().split("chat-config")[0]
    assert config["token"] == token and config["tokenUrl"] is None
    assert "frame-ancestors" in response["Content-Security-Policy"]


def test_a_token_for_another_session_or_a_bad_token_is_404(alice: Persona, bob: Persona) -> None:
    bobs = client_token_mint(session=bob.session).token
    assert Client().get(f"/chat/{alice.session.pk}/?token={bobs}").status_code == 404
    assert Client().get(f"/chat/{alice.session.pk}/?token=garbage").status_code == 404


def test_an_operator_of_the_tenant_gets_a_minted_token(alice: Persona) -> None:
    client = Client()
    client.force_login(alice.operator)
    config = _config(client.get(f"/chat/{alice.session.pk}/"))
    scope = client_token_verify(config["token"])
    assert scope is not None and scope.session_id == str(alice.session.pk)
    refreshed = client.post(f"/chat/{alice.session.pk}/token/")
    assert client_token_verify(refreshed.json()["token"]) is not None


def test_another_tenants_operator_gets_404(alice: Persona, bob: Persona) -> None:
    client = Client()
    client.force_login(bob.operator)
    assert client.get(f"/chat/{alice.session.pk}/").status_code == 404
    assert client.post(f"/chat/{alice.session.pk}/token/").status_code == 404


def test_anonymous_visitors_are_sent_to_log_in(alice: Persona) -> None:
    response = Client().get(f"/chat/{alice.session.pk}/")
    assert response.status_code == 302
    assert "/login/" in response["Location"]
    assert Client().post(f"/chat/{alice.session.pk}/token/").status_code in {401, 403}


def test_the_rest_api_mints_client_tokens_for_own_sessions_only(
    alice: Persona, bob: Persona
) -> None:
    minted = alice.client().post(f"/api/v1/sessions/{alice.session.pk}/client-token/")
    assert minted.status_code == 201
    body = minted.json()
    assert client_token_verify(body["token"]).session_id == str(alice.session.pk)
    assert body["websocket_path"].startswith(f"/ws/sessions/{alice.session.pk}/?token=")
    foreign = bob.client().post(f"/api/v1/sessions/{alice.session.pk}/client-token/")
    assert foreign.status_code == 404
