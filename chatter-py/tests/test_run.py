"""Running real workflows with Python tools, models, retrievers and node kinds."""

from __future__ import annotations

import asyncio
import copy
import json
import threading
import time
from typing import Any

import pytest

import chatter

from conftest import REACT, WeatherModel, counting_loop


def chain(engine: chatter.Engine, n: int) -> chatter.Workflow:
    def step(state: dict[str, Any]) -> dict[str, Any]:
        return {"count": state["variables"].get("count", 0) + 1, "last": state["node_id"]}

    engine.register_node("step", step)
    b = chatter.Workflow.builder().node("start", "start")
    prev = "start"
    for i in range(n):
        b = b.node(f"n{i}", "step").edge(prev, f"n{i}")
        prev = f"n{i}"
    return b.node("end", "end").edge(prev, "end").build()


def test_python_model_calls_python_tool(react: chatter.Workflow, model: WeatherModel) -> None:
    engine = chatter.Engine()
    calls: list[str] = []

    def weather(city: str, unit: str = "C") -> dict[str, Any]:
        """Today's weather of a city."""
        calls.append(city)
        return {"city": city, "temp": 21, "unit": unit}

    engine.register_tool("weather", weather)
    engine.register_model("py", model, default=True)
    result = engine.run(react, "What is the weather in Oslo?")
    assert result.status == "completed"
    assert calls == ["Oslo"]
    assert result.response == 'Forecast: {"city":"Oslo","temp":21,"unit":"C"}'
    assert [r.node_id for r in result.node_runs] == ["start", "agent", "tools", "agent", "end"]
    assert result.usage == chatter.Usage(
        prompt_tokens=12, completion_tokens=4, total_tokens=16, cost=0.5
    )
    # The model saw the tool's inferred schema and description.
    tool = model.requests[0]["tools"][0]
    assert tool["name"] == "weather"
    assert tool["description"] == "Today's weather of a city."
    assert tool["parameters"] == {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
        "required": ["city"],
    }
    finished = [e for e in result.events if isinstance(e, chatter.ToolCallFinishedEvent)]
    assert len(finished) == 1 and finished[0].ok and finished[0].tool == "weather"
    assert [m.role for m in result.messages] == ["user", "assistant", "tool", "assistant"]


def test_explicit_schema_and_description_are_used(react: chatter.Workflow, model: WeatherModel) -> None:
    engine = chatter.Engine()
    schema = {"type": "object", "properties": {"city": {"type": "string", "enum": ["Oslo"]}}}
    engine.register_tool("weather", lambda **kw: kw, schema=schema, description="W")
    engine.register_model("py", model, default=True)
    engine.run(react, "weather in Oslo")
    assert model.requests[0]["tools"][0]["parameters"] == schema
    assert model.requests[0]["tools"][0]["description"] == "W"


def test_request_shape_and_tools_following_registrations(react: chatter.Workflow) -> None:
    engine = chatter.Engine()
    seen: list[dict[str, Any]] = []

    class Recorder:
        def chat(self, request: dict[str, Any]) -> dict[str, Any]:
            seen.append(request)
            names = [t["name"] for t in request["tools"]]
            request["tools"].clear()  # a request is the model's own: the next one is whole again
            return {"content": ",".join(names)}

    engine.register_model("rec", Recorder(), default=True)
    engine.register_tool("a", lambda x: x, description="A")
    assert engine.run(react, "hi").response == "a"
    assert engine.run(react, "hi").response == "a"
    engine.register_tool("b", lambda y: y)
    assert engine.run(react, "hi").response in ("a,b", "b,a")
    first = seen[0]
    assert set(first) == {
        "model", "messages", "temperature", "max_tokens", "top_p", "stop", "tools",
        "tool_choice", "json_mode", "idempotency_key",
    }
    assert first["messages"] == [{"role": "user", "content": "hi"}]
    assert first["model"] is None and first["stop"] == [] and first["json_mode"] is False
    assert first["tool_choice"] is None
    assert first["idempotency_key"].endswith(":agent:0:1")
    required = dict(REACT, nodes=[dict(n) for n in REACT["nodes"]])
    required["nodes"][1]["config"] = {"enable_tools": True, "tool_choice": "required"}
    engine.run(required, "hi")
    assert seen[-1]["tool_choice"] == "required"


class _Looker:
    """Asks for `lookup` three times, then answers; keeps the JSON of every request it saw."""

    def __init__(self, vandal: bool) -> None:
        self.vandal = vandal
        self.seen: list[str] = []
        self.requests: list[dict[str, Any]] = []

    def chat(self, request: dict[str, Any]) -> dict[str, Any]:
        self.seen.append(json.dumps({k: request[k] for k in ("messages", "tools")}))
        self.requests.append(request)
        messages, tools = request["messages"], request["tools"]
        rounds = sum(1 for m in messages if m["role"] == "tool")
        if self.vandal:
            # Everything a model could do to the dicts it was handed, in place.
            for m in messages:
                m["content"] = m.pop("content")  # the same items, in another order
                m.pop("tool_call_id", None)
                for call in m.get("tool_calls", []):
                    call["arguments"]["q"] += "!"
                    call["arguments"]["extra"] = [1, 2]
                m["role"] = _Str(m["role"])  # equal, but a str subclass
            for t in tools:
                t["parameters"]["properties"]["q"]["type"] = "integer"
                t["parameters"].pop("required", None)
                t["description"] += "?"
            messages.append({"role": "user", "content": "extra"})
        if rounds < 3:
            call = {"id": f"c{rounds}", "name": "lookup", "arguments": {"q": f"q{rounds}"}}
            return {"content": "", "tool_calls": [call]}
        return {"content": f"done after {rounds}"}


class _Str(str):
    """A str subclass."""


def test_a_model_that_changes_its_requests_gets_whole_ones_next(react: chatter.Workflow) -> None:
    def lookup(q: str) -> str:
        """Looks up q."""
        return q.upper()

    models = {}
    for vandal in (False, True):
        engine = chatter.Engine()
        engine.register_tool("lookup", lookup)
        models[vandal] = _Looker(vandal)
        engine.register_model("py", models[vandal], default=True)
        for _ in range(2):
            assert engine.run(react, "go").response == "done after 3"
    clean, vandal = models[False], models[True]
    assert len(clean.seen) == 8
    # Each request holds what the run holds, whatever the model did to the earlier ones
    # (key order included).
    assert vandal.seen == clean.seen
    last = json.loads(clean.seen[3])
    assert last["messages"][0] == {"role": "user", "content": "go"}
    assert last["messages"][1:3] == [
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c0", "name": "lookup", "arguments": {"q": "q0"}},
        ]},
        {"role": "tool", "content": "Q0", "tool_call_id": "c0", "name": "lookup"},
    ]
    assert last["tools"] == [{
        "name": "lookup",
        "description": "Looks up q.",
        "parameters": {
            "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"],
        },
    }]
    # A request the model left alone hands the same dicts to the next one (each request gets
    # a list of its own); a changed one gets new dicts.
    first, second = clean.requests[0], clean.requests[1]
    assert second["messages"] is not first["messages"]
    assert second["messages"][0] is first["messages"][0]
    assert second["tools"][0] is first["tools"][0]
    assert vandal.requests[1]["messages"][0] is not vandal.requests[0]["messages"][0]
    assert vandal.requests[1]["tools"][0] is not vandal.requests[0]["tools"][0]


def test_a_node_naming_its_tools_hands_out_the_same_tool_dicts_until_one_changes() -> None:
    # A node naming its tools makes a new list of specs for each request: equal specs still
    # get the dicts of the last request, unless the model changed them.
    def lookup(q: str) -> str:
        """Looks up q."""
        return q.upper()

    wf = copy.deepcopy(REACT)
    wf["nodes"][1]["config"] = {"tools": ["lookup"]}
    for vandal in (False, True):
        engine = chatter.Engine()
        engine.register_tool("lookup", lookup)
        model = _Looker(vandal)
        engine.register_model("py", model, default=True)
        assert engine.run(wf, "go").response == "done after 3"
        first, second = model.requests[0]["tools"][0], model.requests[1]["tools"][0]
        assert (second is first) != vandal
        assert json.loads(model.seen[1])["tools"] == [{
            "name": "lookup",
            "description": "Looks up q.",
            "parameters": {
                "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"],
            },
        }]


class _Dict(dict):  # type: ignore[type-arg]
    """A dict subclass: read through JSON, not directly."""


def _engine_with_a_model_returning(returned: Any) -> chatter.Engine:
    """An engine whose default model's `chat` returns `returned`."""

    class Model:
        def chat(self, request: dict[str, Any]) -> Any:
            return returned

    engine = chatter.Engine()
    engine.register_model("py", Model(), default=True)
    return engine


@pytest.mark.parametrize(
    ("returned", "content", "tool_calls", "usage"),
    [
        ("plain text", "plain text", [], (0, 0, 0, 0.0)),
        ({"content": None, "role": "assistant", "finish_reason": "stop"}, "", [], (0, 0, 0, 0.0)),
        (
            {"content": "x", "usage": {"prompt_tokens": 3, "completion_tokens": 2, "cost": 0.25}},
            "x", [], (3, 2, 5, 0.25),
        ),
        ({"content": "x", "usage": {"total_tokens": 9}}, "x", [], (0, 0, 9, 0.0)),
        ({"content": "x", "usage": None, "tool_calls": None}, "x", [], (0, 0, 0, 0.0)),
        (
            {"content": "", "tool_calls": [
                {"id": "a", "name": "t", "arguments": {"q": [1, 2.5, None, True]}},
                {"name": "u"},
                {"id": None, "name": "v", "arguments": None, "type": "function"},
            ]},
            "",
            [
                {"id": "a", "name": "t", "arguments": {"q": [1, 2.5, None, True]}},
                {"id": "call_1", "name": "u", "arguments": {}},
                {"id": "call_2", "name": "v", "arguments": None},
            ],
            (0, 0, 0, 0.0),
        ),
        # Shapes read through their JSON: a tuple of calls, an id that is not a string, a
        # dict subclass.
        (
            {"content": "y", "tool_calls": ({"id": 7, "name": "t", "arguments": {}},)},
            "y", [{"id": "call_0", "name": "t", "arguments": {}}], (0, 0, 0, 0.0),
        ),
        (_Dict(content="z", usage=_Dict(prompt_tokens=1)), "z", [], (1, 0, 1, 0.0)),
    ],
)
def test_python_model_replies_of_every_shape(
    chat: chatter.Workflow,
    returned: Any,
    content: str,
    tool_calls: list[dict[str, Any]],
    usage: tuple[int, int, int, float],
) -> None:
    result = _engine_with_a_model_returning(returned).run(chat, "hi")
    reply = result.messages[-1]
    assert (reply.role, reply.content, reply.tool_calls) == ("assistant", content, tool_calls)
    assert result.usage == chatter.Usage(
        prompt_tokens=usage[0], completion_tokens=usage[1], total_tokens=usage[2], cost=usage[3]
    )


@pytest.mark.parametrize(
    ("returned", "error"),
    [
        ({"content": 5}, "returned `content` 5; expected a string"),
        ({"content": "x", "tool_calls": {"name": "t"}}, "expected a list"),
        ({"content": "x", "tool_calls": [{"id": "a"}]}, r"tool_calls\[0\] has no string `name`"),
        ({"content": "x", "tool_calls": ["t"]}, r"tool_calls\[0\] has no string `name`"),
        ({"content": "x", "extra": object()}, r"type `object` at \$\.extra"),
        (
            {"content": "x", "tool_calls": [{"name": "t", "arguments": {"q": {1}}}]},
            r"type `set` at \$\.tool_calls\[0\]\.arguments\.q",
        ),
    ],
)
def test_python_model_replies_of_a_wrong_shape_are_node_errors(
    chat: chatter.Workflow, returned: Any, error: str
) -> None:
    engine = _engine_with_a_model_returning(returned)
    with pytest.raises(chatter.NodeError, match=error):
        engine.run(chat, "hi")


def test_async_tool_and_async_model_under_run_and_arun(react: chatter.Workflow) -> None:
    class AsyncModel(WeatherModel):
        async def chat(self, request: dict[str, Any]) -> dict[str, Any]:  # type: ignore[override]
            await asyncio.sleep(0)
            return WeatherModel.chat(self, request)

    async def weather(city: str) -> str:
        await asyncio.sleep(0.001)
        return f"sunny in {city}"

    engine = chatter.Engine()
    engine.register_tool("weather", weather)
    engine.register_model("py", AsyncModel(), default=True)
    assert engine.run(react, "weather in Rome").response == "Forecast: sunny in Rome"

    async def main() -> list[chatter.ExecutionResult]:
        return await asyncio.gather(*[engine.arun(react, f"weather in C{i}") for i in range(50)])

    results = asyncio.run(main())
    assert [r.response for r in results] == [f"Forecast: sunny in C{i}" for i in range(50)]


def test_many_concurrent_arun_on_one_loop(react: chatter.Workflow) -> None:
    engine = chatter.Engine()
    engine.register_tool("weather", lambda city: city.upper())
    engine.register_model("py", WeatherModel(), default=True)

    async def main() -> list[chatter.ExecutionResult]:
        before = threading.active_count()
        tasks = [asyncio.ensure_future(engine.arun(react, f"weather in x{i}")) for i in range(500)]
        during = threading.active_count()
        out = await asyncio.gather(*tasks)
        assert during - before < 8  # no thread per run
        return out

    results = asyncio.run(main())
    assert len({r.execution_id for r in results}) == 500
    assert all(r.response == f"Forecast: X{i}" for i, r in enumerate(results))


def test_threads_call_run_concurrently(react: chatter.Workflow) -> None:
    engine = chatter.Engine()
    engine.register_tool("weather", lambda city: city[::-1])
    engine.register_model("py", WeatherModel(), default=True)
    errors: list[BaseException] = []
    responses: dict[int, list[str | None]] = {}

    def worker(t: int) -> None:
        try:
            responses[t] = [engine.run(react, f"weather in ab{t}{i}").response for i in range(40)]
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    for t in range(8):
        assert responses[t] == [f"Forecast: {f'ab{t}{i}'[::-1]}" for i in range(40)]


def test_python_node_kind_chain(chat: chatter.Workflow) -> None:
    engine = chatter.Engine()
    wf = chain(engine, 10)
    result = engine.run(wf)
    assert result.variables == {"count": 10, "last": "n9"}
    assert [r.node_id for r in result.node_runs] == ["start"] + [f"n{i}" for i in range(10)] + ["end"]


def test_conditional_loop_with_python_node() -> None:
    engine = chatter.Engine()
    engine.register_node("inc", lambda s: {"i": s["variables"].get("i", 0) + 1})
    result = engine.run(counting_loop(), limits={"max_steps": 1000})
    assert result.variables["i"] == 100
    assert sum(1 for r in result.node_runs if r.node_id == "inc") == 100


def test_retriever_feeds_context() -> None:
    engine = chatter.Engine()
    seen: list[tuple[str, int]] = []

    def kb(query: str, top_k: int) -> list[Any]:
        seen.append((query, top_k))
        return ["Refunds take 5 days.", {"content": "Low", "score": 0.1, "source": "faq"}]

    engine.register_retriever("kb", kb)
    engine.register_node("show", lambda s: None)
    wf = (
        chatter.Workflow.builder()
        .node("start", "start")
        .node("r", "retrieval", retriever="kb", top_k=3, score_threshold=0.5, output_variable="docs")
        .node("end", "end")
        .edge("start", "r")
        .edge("r", "end")
        .build()
    )
    result = engine.run(wf, "refund policy")
    assert seen == [("refund policy", 3)]
    assert [d["content"] for d in result.variables["docs"]] == ["Refunds take 5 days."]


def test_scripted_model_from_dict_file_and_text(tmp_path: Any, chat: chatter.Workflow) -> None:
    engine = chatter.Engine()
    engine.register_scripted("scripted", {"default": {"content": "from dict"}})
    assert engine.run(chat, "hi").response == "from dict"
    p = tmp_path / "script.json"
    p.write_text('{"default": {"content": "from file"}}')
    engine.register_scripted("scripted", p)
    assert engine.run(chat, "hi").response == "from file"
    engine.register_scripted("scripted", '{"default": {"content": "from text"}}')
    assert engine.run(chat, "hi").response == "from text"


def test_openai_provider_registers(chat: chatter.Workflow) -> None:
    engine = chatter.Engine()
    engine.register_openai("openai", base_url="http://127.0.0.1:9", api_key="k", model="m")
    assert engine.registered()["models"] == ["openai"]


def test_stream_yields_typed_events_with_python_model_tokens(chat: chatter.Workflow) -> None:
    class Streamer:
        def chat(self, request: dict[str, Any]) -> str:
            return "unused"

        def stream(self, request: dict[str, Any]) -> Any:
            yield "Hel"
            yield "lo"

    engine = chatter.Engine()
    engine.register_model("py", Streamer(), default=True)
    stream = engine.stream(chat, "hi")
    events = list(stream)
    assert isinstance(events[0], chatter.ExecutionStartedEvent)
    assert isinstance(events[-1], chatter.ExecutionCompletedEvent)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e.text for e in events if isinstance(e, chatter.TokenEvent)] == ["Hel", "lo"]
    assert events[-1].response == "Hello"
    result = stream.result()
    assert result.response == "Hello" and result.execution_id == stream.execution_id


def test_astream_yields_events(chat: chatter.Workflow) -> None:
    engine = chatter.Engine()
    engine.register_scripted("s", {"default": {"content": "abcdef"}, "chunk_size": 2}, default=True)

    async def main() -> tuple[list[str], chatter.ExecutionResult]:
        stream = engine.astream(chat, "hi")
        tokens = [e.text async for e in stream if isinstance(e, chatter.TokenEvent)]
        return tokens, await stream.result()

    tokens, result = asyncio.run(main())
    assert tokens == ["ab", "cd", "ef"]
    assert result.response == "abcdef"


def test_stream_cancel_ends_cancelled(chat: chatter.Workflow) -> None:
    engine = chatter.Engine()
    engine.register_scripted("s", {"default": {"content": "x", "hang": True}}, default=True)
    stream = engine.stream(chat, "hi")
    for event in stream:
        if isinstance(event, chatter.NodeStartedEvent) and event.node_id == "chat":
            stream.cancel()
    with pytest.raises(chatter.Cancelled):
        stream.result()


def test_cancel_by_id_stops_a_run_in_another_thread(chat: chatter.Workflow) -> None:
    engine = chatter.Engine()
    engine.register_scripted("s", {"default": {"content": "x", "hang": True}}, default=True)
    outcome: list[BaseException] = []

    def worker() -> None:
        try:
            engine.run(chat, "hi", execution_id="01CANCELMEFROMANOTHERTHRD")
        except BaseException as e:  # noqa: BLE001 - the test inspects it
            outcome.append(e)

    thread = threading.Thread(target=worker)
    thread.start()
    deadline = time.monotonic() + 30
    while True:  # the run registers itself before it starts; retry until it is there
        try:
            engine.cancel("01CANCELMEFROMANOTHERTHRD")
            break
        except chatter.NotFoundError:
            assert time.monotonic() < deadline, "the run never became cancellable"
            time.sleep(0.01)
    thread.join(30)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], chatter.Cancelled), outcome
    # It is gone from the live runs; without a store there is nothing else to cancel.
    with pytest.raises(chatter.NotFoundError):
        engine.cancel("01CANCELMEFROMANOTHERTHRD")
    with pytest.raises(TypeError):
        engine.cancel(7)  # type: ignore[arg-type]


def test_templates_list_get_run() -> None:
    names = [t.name for t in chatter.list_templates()]
    assert "universal_chat" in names and "general_chat" in names
    t = chatter.get_template("general_chat")
    assert isinstance(t.parameter_schema, dict)
    engine = chatter.Engine()
    engine.register_scripted("scripted", {"default": {"content": "templated"}}, default=True)
    assert engine.run_template("general_chat", {}, "hi").response == "templated"
    wf = t.workflow()
    assert wf.validate().is_valid


def test_engine_survives_every_failure(react: chatter.Workflow, model: WeatherModel) -> None:
    engine = chatter.Engine()
    engine.register_node("flaky", lambda s: 1 / 0)
    wf = chatter.Workflow.builder().node("start", "start").node("f", "flaky").edge("start", "f").build()
    for _ in range(3):
        with pytest.raises(chatter.NodeError, match="ZeroDivisionError: division by zero"):
            engine.run(wf)
    engine.register_node("flaky", lambda s: {"ok": True})
    assert engine.run(wf).variables == {"ok": True}


def test_events_false_leaves_out_only_the_events() -> None:
    engine = chatter.Engine()
    wf = chain(engine, 3)
    kept = engine.run(wf, "go")
    quiet = engine.run(wf, "go", events=False)
    assert quiet.events == []
    assert quiet.variables == kept.variables == {"count": 3, "last": "n2"}
    assert [r.node_id for r in quiet.node_runs] == [r.node_id for r in kept.node_runs]
    assert [e.type for e in kept.events][0] == "execution_started"
    again = asyncio.run(engine.arun(wf, "go", events=False))
    assert again.events == [] and again.variables == kept.variables
