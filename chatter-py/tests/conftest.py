"""Shared fixtures: workflows the tests run, built the way a user would."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from typing import Any, Iterator

import pytest

import chatter

REACT: dict[str, Any] = {
    "name": "react",
    "nodes": [
        {"id": "start", "type": "start"},
        {"id": "agent", "type": "llm", "config": {"enable_tools": True}},
        {"id": "tools", "type": "tool"},
        {"id": "end", "type": "end"},
    ],
    "edges": [
        {"source": "start", "target": "agent"},
        {"source": "agent", "target": "tools", "condition": "has_tool_calls"},
        {"source": "agent", "target": "end"},
        {"source": "tools", "target": "agent"},
    ],
}


def counting_loop() -> chatter.Workflow:
    """A conditional loop: the Python node kind `inc` (adds 1 to the variable `i`; each test
    registers it) runs until `i` is 100, then the run ends."""
    return (
        chatter.Workflow.builder()
        .node("start", "start")
        .node("inc", "inc")
        .node("check", "conditional", condition="variables.i < 100")
        .node("end", "end")
        .edge("start", "inc")
        .edge("inc", "check")
        .edge("check", "inc", branch="true")
        .edge("check", "end", branch="false")
        .build()
    )


@pytest.fixture
def react() -> chatter.Workflow:
    return chatter.Workflow.from_dict(REACT)


@pytest.fixture
def chat() -> chatter.Workflow:
    return (
        chatter.Workflow.builder("chat")
        .node("start", "start")
        .node("chat", "llm")
        .node("end", "end")
        .edge("start", "chat")
        .edge("chat", "end")
        .build()
    )


class WeatherModel:
    """A Python chat model: asks for the weather tool once, then answers with its result."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def chat(self, request: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(request)
        last = request["messages"][-1]
        if last["role"] == "tool":
            return {
                "content": f"Forecast: {last['content']}",
                "usage": {"prompt_tokens": 7, "completion_tokens": 3, "cost": 0.5},
            }
        city = last["content"].split()[-1].rstrip("?")
        return {
            "content": "",
            "tool_calls": [{"id": "c1", "name": "weather", "arguments": {"city": city}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1},
        }


@pytest.fixture
def model() -> WeatherModel:
    return WeatherModel()


@pytest.fixture
def pg() -> Iterator[tuple[str, str]]:
    url = os.environ.get("CHATTER_TEST_POSTGRES_URL", "")
    if not url:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CHATTER_TEST_POSTGRES_URL is not set under CI: the Postgres tests must run")
        pytest.skip("CHATTER_TEST_POSTGRES_URL is not set")
    schema = f"chatter_pytest_{uuid.uuid4().hex}"
    yield url, schema
    if shutil.which("psql"):
        subprocess.run(
            ["psql", url, "-q", "-c", f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'],
            check=False,
            capture_output=True,
        )
