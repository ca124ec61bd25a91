"""Chatter quickstart: a tool-calling agent with a Python tool and a Python model, run three ways.

Runs offline: the "model" is a small Python class. Swap in a real provider with
``engine.register_openai("openai", model="gpt-4o-mini", default=True)``.

    pip install ./chatter-py
    python examples/python/quickstart.py
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import chatter


def get_weather(city: str, unit: str = "C") -> dict[str, Any]:
    """Current weather of a city."""
    return {"city": city, "temperature": 21, "unit": unit, "sky": "sunny"}


class TinyModel:
    """Calls `get_weather` for the city in the question, then answers from the tool's result."""

    def chat(self, request: dict[str, Any]) -> dict[str, Any]:
        last = request["messages"][-1]
        if last["role"] == "tool":
            w = json.loads(last["content"])
            text = f"It is {w['temperature']} °{w['unit']} and {w['sky']} in {w['city']}."
            return {"content": text, "usage": {"prompt_tokens": 12, "completion_tokens": 6}}
        city = last["content"].rstrip("?").split()[-1]
        call = {"name": "get_weather", "arguments": {"city": city}}
        return {"tool_calls": [call], "usage": {"prompt_tokens": 8, "completion_tokens": 1}}


AGENT = {
    "name": "weather-agent",
    "nodes": [
        {"id": "start", "type": "start"},
        {"id": "agent", "type": "llm", "config": {"system_prompt": "You are helpful.", "enable_tools": True}},
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


def main() -> None:
    engine = chatter.Engine()
    engine.register_tool("get_weather", get_weather)  # schema inferred from the type hints
    engine.register_model("tiny", TinyModel(), default=True)

    workflow = chatter.Workflow.from_dict(AGENT)
    report = workflow.validate()
    print("valid:", report.is_valid)

    # 1. Blocking (the GIL is released while Rust runs the graph).
    result = engine.run(workflow, "What is the weather in Oslo?")
    print("response:", result.response)
    print("tokens:", result.usage.total_tokens)
    print("nodes:", " -> ".join(r.node_id for r in result.node_runs))

    # 2. Streaming events as they happen.
    tokens = [e.text for e in engine.stream(workflow, "Weather in Oslo?") if isinstance(e, chatter.TokenEvent)]
    print("streamed:", "".join(tokens))

    # 3. asyncio: many runs at once, no thread per run.
    async def many() -> list[chatter.ExecutionResult]:
        cities = ["Oslo", "Lima", "Pune"]
        return await asyncio.gather(*(engine.arun(workflow, f"Weather in {c}?") for c in cities))

    for r in asyncio.run(many()):
        print("async:", r.response)

    # Errors are exceptions with the Python traceback of the failing tool.
    engine.register_node("fails", lambda state: 1 / 0)
    broken = chatter.Workflow.builder().node("start", "start").node("x", "fails").edge("start", "x").build()
    try:
        engine.run(broken)
    except chatter.NodeError as e:
        print("error:", str(e).splitlines()[-1])


if __name__ == "__main__":
    main()
