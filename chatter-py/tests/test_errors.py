"""Every exception class, and bad input from Python: clear exceptions, the engine keeps working."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest

import chatter

from conftest import WeatherModel


def failing_node_workflow(kind: str) -> chatter.Workflow:
    return (
        chatter.Workflow.builder()
        .node("start", "start")
        .node("boom", kind)
        .node("end", "end")
        .edge("start", "boom")
        .edge("boom", "end")
        .build()
    )


def test_hierarchy() -> None:
    assert issubclass(chatter.ValidationError, chatter.ChatterError)
    assert issubclass(chatter.ValidationError, ValueError)
    for cls in (chatter.NodeError, chatter.Cancelled, chatter.TimeoutError):
        assert issubclass(cls, chatter.ExecutionError)
    for cls in (chatter.ExecutionError, chatter.TemplateError, chatter.StorageError):
        assert issubclass(cls, chatter.ChatterError)
    assert issubclass(chatter.TimeoutError, TimeoutError)


def test_validation_error_when_running_an_invalid_workflow() -> None:
    engine = chatter.Engine()
    bad = {"nodes": [{"id": "start", "type": "start"}], "edges": [{"source": "start", "target": "x"}]}
    with pytest.raises(chatter.ValidationError) as info:
        engine.run(bad)
    assert [(i.code, i.path) for i in info.value.issues] == [("CHT-V005", "$.edges[0].target")]
    assert isinstance(info.value.issues[0], chatter.ValidationIssue)


def test_python_exception_surfaces_with_traceback_as_node_error() -> None:
    def explode(state: dict[str, Any]) -> None:
        raise RuntimeError("kaboom in user code")

    engine = chatter.Engine()
    engine.register_node("explode", explode)
    with pytest.raises(chatter.NodeError) as info:
        engine.run(failing_node_workflow("explode"))
    msg = str(info.value)
    assert "node `boom` failed" in msg
    assert "Traceback (most recent call last)" in msg
    assert "in explode" in msg and "RuntimeError: kaboom in user code" in msg
    assert info.value.node_id == "boom"
    result = info.value.result
    assert result.status == "failed" and result.error.node_id == "boom"
    # Without raising, the same failure is the result's status.
    result = engine.run(failing_node_workflow("explode"), raise_on_error=False)
    assert result.status == "failed"
    assert [r.status for r in result.node_runs if r.node_id == "boom"] == ["failed"]


def test_tool_exception_text_reaches_the_node_error_or_the_model(react: chatter.Workflow) -> None:
    def weather(city: str) -> str:
        raise ValueError(f"no station in {city}")

    engine = chatter.Engine()
    engine.register_tool("weather", weather)
    model = WeatherModel()
    engine.register_model("py", model, default=True)
    result = engine.run(react, "weather in Oslo", raise_on_error=False)
    finished = [e for e in result.events if isinstance(e, chatter.ToolCallFinishedEvent)]
    assert len(finished) == 1 and not finished[0].ok
    text = str(finished[0].result)
    assert "Traceback (most recent call last)" in text
    assert "ValueError: no station in Oslo" in text


def test_unserialisable_tool_result_is_a_clear_error(react: chatter.Workflow) -> None:
    engine = chatter.Engine()
    engine.register_tool("weather", lambda city: {"when": object()})
    engine.register_model("py", WeatherModel(), default=True)
    result = engine.run(react, "weather in Oslo", raise_on_error=False)
    finished = [e for e in result.events if isinstance(e, chatter.ToolCallFinishedEvent)]
    assert "cannot convert a value of type `object` at $.when to JSON" in str(finished[0].result)


def test_node_returning_garbage_is_a_node_error() -> None:
    engine = chatter.Engine()
    engine.register_node("bad", lambda s: 42)
    with pytest.raises(chatter.NodeError, match="returned 42; expected a dict of variables or None"):
        engine.run(failing_node_workflow("bad"))


def test_model_failure_is_a_node_error(chat: chatter.Workflow) -> None:
    class Broken:
        def chat(self, request: dict[str, Any]) -> Any:
            return 3.5

    engine = chatter.Engine()
    engine.register_model("py", Broken(), default=True)
    with pytest.raises(chatter.NodeError, match="expected a str or a dict with `content`"):
        engine.run(chat, "hi")


def test_execution_error_on_a_limit() -> None:
    engine = chatter.Engine()
    engine.register_node("noop", lambda s: None)
    wf = (
        chatter.Workflow.builder()
        .node("start", "start")
        .node("a", "noop")
        .node("check", "conditional", condition="true")
        .node("end", "end")
        .edge("start", "a")
        .edge("a", "check")
        .edge("check", "a", branch="true")
        .edge("check", "end", branch="false")
        .build()
    )
    with pytest.raises(chatter.ExecutionError) as info:
        engine.run(wf, limits=chatter.Limits(max_steps=20))
    assert type(info.value) is chatter.ExecutionError
    assert info.value.error_class == "max_steps"


def test_timeout_error(chat: chatter.Workflow) -> None:
    engine = chatter.Engine()
    engine.register_scripted("s", {"default": {"content": "", "hang": True}}, default=True)
    with pytest.raises(chatter.TimeoutError) as info:
        engine.run(chat, "hi", limits={"timeout_ms": 200})
    assert info.value.result.status == "failed"
    with pytest.raises(TimeoutError):  # the builtin catches it too
        engine.run(chat, "hi", limits={"node_timeout_ms": 100})


def test_template_error() -> None:
    with pytest.raises(chatter.TemplateError, match="unknown template `nope`"):
        chatter.Workflow.from_template("nope")
    with pytest.raises(chatter.TemplateError, match="unknown template `nope`"):
        chatter.get_template("nope")


def test_storage_error_for_a_store_that_cannot_be_opened(tmp_path: Any) -> None:
    with pytest.raises(chatter.StorageError):
        chatter.Engine(store=f"sqlite://{tmp_path}/no/such/dir/x.db")
    with pytest.raises(chatter.ChatterError):
        chatter.Engine(store="mysql://localhost/x")
    with pytest.raises(chatter.ConfigError, match="this engine has no store"):
        chatter.Engine().list_executions()


def test_config_and_not_found_errors() -> None:
    engine = chatter.Engine()
    with pytest.raises(chatter.ConfigError, match="unknown field `contnet`"):
        engine.register_scripted("s", {"default": {"contnet": "x"}})
    with pytest.raises(chatter.NotFoundError, match="unknown model provider `nope`"):
        engine.register_openai("x", api_key="k", base_url="http://127.0.0.1:9")
        engine._native.set_default_model("nope")


def test_bad_registrations_are_type_errors() -> None:
    engine = chatter.Engine()
    with pytest.raises(TypeError, match="must have a callable `chat` method"):
        engine.register_model("m", object())
    with pytest.raises(TypeError, match="must be callable"):
        engine.register_tool("t", 42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="input must be a str, a dict or None"):
        engine.run({"nodes": []}, 42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unknown limit `max_speed`"):
        chatter.Engine(limits={"max_speed": 1})


def test_cancelled_via_stream(chat: chatter.Workflow) -> None:
    engine = chatter.Engine()
    engine.register_scripted("s", {"default": {"content": "", "hang": True}}, default=True)
    stream = engine.stream(chat, "hi")
    stream.cancel()
    with pytest.raises(chatter.Cancelled):
        stream.result()


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals")
def test_keyboard_interrupt_cancels_run_cleanly(chat: chatter.Workflow, tmp_path: Path) -> None:
    # The model hangs forever: `run` returns only because Ctrl-C cancelled the execution, which
    # the store then records as cancelled.
    engine = chatter.Engine(store=f"sqlite://{tmp_path / 'interrupt.db'}")
    engine.register_scripted("s", {"default": {"content": "", "hang": True}}, default=True)
    timer = threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        engine.run(chat, "hi", execution_id="interrupted-run")
    stored = engine.get_execution("interrupted-run")
    assert stored is not None
    assert stored["execution"]["status"] == "cancelled"
    engine.register_scripted("s", {"default": {"content": "still alive"}}, default=True)
    assert engine.run(chat, "hi").response == "still alive"


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals")
def test_keyboard_interrupt_inside_a_python_tool_stops_the_run(react: chatter.Workflow) -> None:
    # Ctrl-C landing while the tool's Python code runs raises KeyboardInterrupt there: `run`
    # must raise it too, not turn it into a tool error the model reads and carries on after.
    engine = chatter.Engine()
    calls: list[str] = []

    def weather(city: str) -> str:
        calls.append(city)
        raise KeyboardInterrupt

    engine.register_tool("weather", weather)
    engine.register_model("py", WeatherModel(), default=True)
    with pytest.raises(KeyboardInterrupt):
        engine.run(react, "weather in Oslo")
    assert calls == ["Oslo"]
    engine.register_tool("weather", lambda city: f"sunny in {city}")
    assert engine.run(react, "weather in Oslo").response == "Forecast: sunny in Oslo"


def test_model_whose_chat_is_not_callable_is_a_type_error() -> None:
    class NoChat:
        chat = "not a method"

    engine = chatter.Engine()
    with pytest.raises(TypeError, match="model `m` must have a callable `chat` method"):
        engine.register_model("m", NoChat())
    assert engine.registered()["models"] == []


def test_unserialisable_value_from_a_python_model_is_a_node_error(chat: chatter.Workflow) -> None:
    class BadModel:
        def chat(self, request: dict[str, Any]) -> Any:
            return {"content": "x", "usage": {"prompt_tokens": {1, 2}}}

    engine = chatter.Engine()
    engine.register_model("bad", BadModel(), default=True)
    with pytest.raises(chatter.NodeError, match=r"type `set` at \$\.usage\.prompt_tokens"):
        engine.run(chat, "hi")
    engine.register_scripted("ok", {"default": {"content": "fine"}}, default=True)
    assert engine.run(chat, "hi").response == "fine"
