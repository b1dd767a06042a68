"""The OpenAI-compatible backend against a small local server speaking the same protocol."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agents.llm.base import ChatMessage, Delta, Done, GenerationOptions, LLMError, ToolCall
from agents.llm.openai_compat import OpenAICompatibleBackend

RECEIVED: list[dict] = []


def _chunk(delta: dict, usage: dict | None = None) -> bytes:
    body = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "finish_reason": None}] if delta else [],
        "usage": usage,
    }
    return f"data: {json.dumps(body)}\n\n".encode()


class FakeOpenAI(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        RECEIVED.append({"body": request, "auth": self.headers.get("Authorization")})
        if request["model"] == "broken":
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b'{"error": {"message": "boom"}}')
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        self.wfile.write(_chunk({"role": "assistant", "content": "Hello"}))
        self.wfile.write(_chunk({"content": " there"}))
        call = {
            "index": 0,
            "id": "t1",
            "type": "function",
            "function": {"name": "update_task_state", "arguments": '{"step": "done"}'},
        }
        self.wfile.write(_chunk({"tool_calls": [call]}))
        self.wfile.write(
            _chunk({}, usage={"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9})
        )
        self.wfile.write(b"data: [DONE]\n\n")

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture
def endpoint() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    RECEIVED.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_streams_deltas_tool_calls_and_usage(endpoint: str) -> None:
    options = GenerationOptions(model="m", base_url=endpoint, api_key="sk-test")
    events = list(OpenAICompatibleBackend().stream([ChatMessage("user", "hi")], options))
    assert [e.text for e in events if isinstance(e, Delta)] == ["Hello", " there"]
    assert [e for e in events if isinstance(e, ToolCall)] == [
        ToolCall(id="t1", name="update_task_state", arguments={"step": "done"})
    ]
    done = events[-1]
    assert isinstance(done, Done)
    assert done.text == "Hello there"
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (7, 2)
    assert RECEIVED[0]["auth"] == "Bearer sk-test"
    assert RECEIVED[0]["body"]["stream"] is True


def test_an_endpoint_error_becomes_llm_error(endpoint: str) -> None:
    options = GenerationOptions(model="broken", base_url=endpoint, api_key="k")
    with pytest.raises(LLMError):
        list(OpenAICompatibleBackend().stream([ChatMessage("user", "hi")], options))


def test_an_unreachable_endpoint_becomes_llm_error() -> None:
    options = GenerationOptions(model="m", base_url="http://127.0.0.1:9/v1", api_key="k")
    with pytest.raises(LLMError):
        list(OpenAICompatibleBackend().stream([ChatMessage("user", "hi")], options))


@pytest.mark.django_db
def test_an_agent_with_its_own_endpoint_runs_turns_through_it(endpoint: str, alice) -> None:
    from django.conf import settings
    from django.test import override_settings

    from agents.models import Agent, Message

    Agent.objects.filter(pk=alice.agent.pk).update(llm={"model": "m", "base_url": endpoint})
    with override_settings(AGENTS={**settings.AGENTS, "LLM_BACKEND": "auto"}):
        ok = alice.client().post(
            f"/api/v1/sessions/{alice.session.pk}/messages/", {"content": "hi"}, format="json"
        )
        assert ok.status_code == 201
        assert ok.json()["assistant_message"]["content"] == "Hello there"
        Agent.objects.filter(pk=alice.agent.pk).update(
            llm={"model": "m", "base_url": "http://127.0.0.1:9/v1"}
        )
        broken = alice.client().post(
            f"/api/v1/sessions/{alice.session.pk}/messages/", {"content": "again"}, format="json"
        )
    assert broken.status_code == 502
    assert broken.json()["type"].endswith("llm_failed")
    assert Message.objects.get(session=alice.session, content="again").status == "failed"


def test_sends_tool_specs_calls_and_answers_in_the_api_shape(endpoint: str) -> None:
    spec = {"name": "lookup_order", "description": "d", "parameters": {"type": "object"}}
    options = GenerationOptions(model="m", base_url=endpoint, tools=(spec,))
    call = ToolCall(id="c1", name="lookup_order", arguments={"number": 7})
    history = [
        ChatMessage("user", "where is order 7?"),
        ChatMessage("assistant", "", (call,)),
        ChatMessage("tool", '{"status": "shipped"}', tool_call_id="c1"),
    ]
    list(OpenAICompatibleBackend().stream(history, options))
    body = RECEIVED[0]["body"]
    assert body["tools"] == [{"type": "function", "function": spec}]
    assert body["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "lookup_order", "arguments": '{"number": 7}'},
            }
        ],
    }
    assert body["messages"][2] == {
        "role": "tool",
        "content": '{"status": "shipped"}',
        "tool_call_id": "c1",
    }
