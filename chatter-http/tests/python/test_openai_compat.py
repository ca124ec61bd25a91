"""The OpenAI-compatible API of `chatter serve`, driven by the official `openai` package.

Starts the real `chatter serve` binary (path in CHATTER_BIN, e.g. target/debug/chatter) on a
temporary SQLite file with a known admin API key and a scripted model, then talks to it with
`openai.OpenAI(base_url=..., api_key=...)`. Run by scripts/test.sh.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import urllib.request
from typing import Any, Iterator

import openai
import pytest

ADMIN_KEY = "chatter_api_0000000000000000000000000000openaipy"
REPLY = "Hello from the script, streamed in chunks."
WEATHER = "It is 21 degrees in Oslo."
SCRIPT = {
    "rules": [
        {"match": {"tool_result_for": "get_weather"}, "reply": {"content": WEATHER}},
        {
            "match": {"role": "user", "contains": "weather"},
            "reply": {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]},
        },
    ],
    "default": {"content": REPLY},
    "usage": {"prompt_tokens": 12, "completion_tokens": 8},
    "chunk_size": 5,
}
WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def graph(name: str, client_tools: bool) -> dict[str, Any]:
    return {
        "name": name,
        "nodes": [
            {"id": "start", "type": "start"},
            {"id": "chat", "type": "llm", "config": {"client_tools": client_tools}},
            {"id": "end", "type": "end"},
        ],
        "edges": [{"source": "start", "target": "chat"}, {"source": "chat", "target": "end"}],
    }


class Server:
    def __init__(self, url: str) -> None:
        self.url = url

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            result: dict[str, Any] = json.load(response)
            return result

    def client(self, api_key: str = ADMIN_KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0, timeout=30)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    binary = os.environ.get("CHATTER_BIN")
    if not binary:
        pytest.fail("CHATTER_BIN must name the `chatter` binary (e.g. target/debug/chatter)")
    workdir = tempfile.mkdtemp(prefix="chatter-openai-")
    script = os.path.join(workdir, "model.json")
    with open(script, "w", encoding="utf-8") as f:
        json.dump(SCRIPT, f)
    env = dict(os.environ, CHATTER_ADMIN_API_KEY=ADMIN_KEY)
    for name in ("CHATTER_MODELS", "CHATTER_CONFIG", "CHATTER_TOOLS"):
        env.pop(name, None)
    process = subprocess.Popen(
        [
            binary,
            "serve",
            "--db",
            f"sqlite://{workdir}/chatter.db",
            "--addr",
            "127.0.0.1:0",
            "--model",
            f"scripted:{script}",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        url = None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("chatter serving on "):
                url = line.removeprefix("chatter serving on ").strip()
                break
        assert url, f"the server did not start: {lines}"
        yield Server(url)
    finally:
        process.terminate()
        process.wait(timeout=60)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def support(server: Server) -> str:
    created = server.post("/api/v1/workflows/definitions", graph("Support bot", False))
    return f"workflow:{created['id']}"


@pytest.fixture(scope="module")
def weather(server: Server) -> str:
    created = server.post("/api/v1/workflows/definitions", graph("Weather bot", True))
    return f"workflow:{created['id']}"


def test_models_list(server: Server, support: str) -> None:
    models = server.client().models.list()
    ids = [m.id for m in models.data]
    assert support in ids
    assert "template:universal_chat" in ids
    assert all(m.object == "model" for m in models.data)
    one = server.client().models.retrieve(support)
    assert one.id == support
    assert one.owned_by


def test_plain_completion(server: Server, support: str) -> None:
    completion = server.client().chat.completions.create(
        model=support,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello?"},
        ],
    )
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == support
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == REPLY
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (12, 8)
    assert completion.usage.total_tokens == 20


def test_streamed_completion(server: Server, support: str) -> None:
    stream = server.client().chat.completions.create(
        model=support,
        messages=[{"role": "user", "content": "Hello?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert all(f is None for f in finishes[:-1])
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 20
    assert len({c.id for c in chunks}) == 1


def test_client_tools_round_trip(server: Server, weather: str) -> None:
    client = server.client()
    messages: list[Any] = [{"role": "user", "content": "What is the weather in Oslo?"}]
    first = client.chat.completions.create(model=weather, messages=messages, tools=[WEATHER_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    call = calls[0]
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Oslo"}
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"celsius": 21}'})
    second = client.chat.completions.create(model=weather, messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == WEATHER


def test_unknown_model_is_not_found(server: Server) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        server.client().chat.completions.create(
            model="workflow:no-such-workflow",
            messages=[{"role": "user", "content": "Hello?"}],
        )
    assert raised.value.status_code == 404
    assert raised.value.code == "model_not_found"


def test_bad_key_and_bad_messages(server: Server, support: str) -> None:
    with pytest.raises(openai.AuthenticationError):
        server.client(api_key="chatter_api_not_a_key").models.list()
    with pytest.raises(openai.BadRequestError) as raised:
        server.client().chat.completions.create(
            model=support,
            messages=[{"role": "tool", "tool_call_id": "call_404", "content": "x"}],
        )
    assert raised.value.param == "messages[0].tool_call_id"
    with pytest.raises(openai.BadRequestError) as raised:
        server.client().chat.completions.create(
            model=support,
            messages=[{"role": "user", "content": "weather?"}],
            tools=[WEATHER_TOOL],
        )
    assert raised.value.code == "tools_not_supported"
