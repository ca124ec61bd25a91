"""Shared fixtures: workflows the tests run, built the way a user would."""

from __future__ import annotations

from typing import Any

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
