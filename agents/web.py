"""The end user's chat page: `/chat/{session_id}/`.

Two ways in: a link with `?token=` that the tenant's backend minted through
`POST /api/v1/sessions/{id}/client-token/`, or a logged-in operator of the session's tenant,
for whom the page mints the token itself (and refreshes it at `/chat/{id}/token/`).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.http import require_GET, require_POST

from agentplatform.core import rls
from agentplatform.core.console import operator_roles
from agents import live
from agents.client_tokens import client_token_mint, client_token_verify
from agents.engine.payloads import message_payload
from agents.errors import SessionNotFound
from agents.models import Message, Run, Session
from agents.selectors import message_list, run_list, session_find

HISTORY_LIMIT = 200


@require_GET
@xframe_options_exempt  # tenants embed the page; frame-ancestors below says where
def chat_page(request: HttpRequest, session_id: str) -> HttpResponse:
    token = request.GET.get("token")
    if token:
        session = _session_for_token(token, session_id)
        token_url = None
    else:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        session = _session_for_operator(request, session_id)
        token = client_token_mint(session=session).token
        token_url = f"/chat/{session.pk}/token/"
    # The seq is read before the history: frames after it are replayed on connect, and the
    # page skips messages it already shows, so nothing falls between the two reads.
    config = {
        "sessionId": str(session.pk),
        "wsPath": f"/ws/sessions/{session.pk}/",
        "token": token,
        "tokenUrl": token_url,
        "lastSeq": live.current_seq(session.pk),
        "history": _history(session),
        "waiting": _waiting(session),
    }
    response = render(
        request, "chat/page.html", {"session": session, "agent": session.agent, "config": config}
    )
    response["Content-Security-Policy"] = (
        f"default-src 'self'; connect-src 'self' ws: wss:; "
        f"frame-ancestors {settings.CHAT_FRAME_ANCESTORS}"
    )
    return response


@require_POST
def chat_token(request: HttpRequest, session_id: str) -> JsonResponse:
    """A fresh client token for a logged-in operator's open chat page."""
    if not request.user.is_authenticated:
        return JsonResponse({"detail": "Not logged in."}, status=401)
    session = _session_for_operator(request, session_id)
    minted = client_token_mint(session=session)
    return JsonResponse({"token": minted.token, "expires_at": minted.expires_at.isoformat()})


def _session_for_token(token: str, session_id: str) -> Session:
    scope = client_token_verify(token)
    if scope is None or scope.session_id != session_id:
        raise Http404("No such chat.")
    rls.enter(rls.tenant_scope_of(scope.tenant_id))  # the token's tenant, for this request
    return _get_session(session_id, tenant_ids=[scope.tenant_id])


def _session_for_operator(request: HttpRequest, session_id: str) -> Session:
    if request.user.is_superuser:
        return _get_session(session_id, tenant_ids=None)
    tenant_ids = [str(tenant_id) for tenant_id in operator_roles(request)]
    return _get_session(session_id, tenant_ids=tenant_ids)


def _get_session(session_id: str, *, tenant_ids: list[str] | None) -> Session:
    try:
        return session_find(id=session_id, tenant_ids=tenant_ids)
    except SessionNotFound as error:
        raise Http404("No such chat.") from error


def _history(session: Session) -> list[dict[str, Any]]:
    newest = list(message_list(session=session).order_by("-seq")[:HISTORY_LIMIT])
    return [message_payload(m) for m in reversed(newest) if m.role != Message.Role.SYSTEM]


def _waiting(session: Session) -> dict[str, Any] | None:
    """The run waiting for an action on this session, for the page's approval cards."""
    run = run_list(session=session, status=Run.Status.REQUIRES_ACTION).first()
    if run is None:
        return None
    answered = sorted((run.action_results or {}).keys())
    return {"run": str(run.pk), "required_action": run.required_action, "answered": answered}
