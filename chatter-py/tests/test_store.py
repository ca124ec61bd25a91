"""Persistence to SQLite and reading runs back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import chatter

from conftest import WeatherModel


def test_runs_are_persisted_to_sqlite_and_read_back(tmp_path: Path, react: chatter.Workflow) -> None:
    url = f"sqlite://{tmp_path}/chatter.db"
    engine = chatter.Engine(store=url)
    engine.register_tool("weather", lambda city: f"sunny in {city}")
    engine.register_model("py", WeatherModel(), default=True)
    result = engine.run(react, "weather in Oslo")

    async def more() -> list[chatter.ExecutionResult]:
        return await asyncio.gather(*[engine.arun(react, f"weather in C{i}") for i in range(5)])

    others = asyncio.run(more())
    assert (tmp_path / "chatter.db").stat().st_size > 0

    # A second engine on the same file sees everything.
    reader = chatter.Engine(store=url)
    listed = reader.list_executions()
    assert {e["id"] for e in listed} == {result.execution_id} | {r.execution_id for r in others}
    assert all(e["status"] == "completed" for e in listed)

    stored = reader.get_execution(result.execution_id)
    assert stored is not None
    execution = stored["execution"]
    assert execution["response"] == "Forecast: sunny in Oslo"
    assert execution["input"] == {"message": "weather in Oslo"}
    assert execution["total_tokens"] == result.usage.total_tokens == 16
    runs = sorted((r["node_id"], r["iteration"], r["status"]) for r in stored["node_runs"])
    assert runs == sorted((r.node_id, r.iteration, r.status) for r in result.node_runs)
    assert len(runs) == 5 and {r[2] for r in runs} == {"completed"}
    assert [e["event_type"] for e in stored["events"]] == [e.type for e in result.events]
    assert [e["seq"] for e in stored["events"]] == [e.seq for e in result.events]
    assert reader.get_execution("01NOSUCHEXECUTION000000000") is None


def test_failed_runs_are_stored_as_failed(tmp_path: Path) -> None:
    engine = chatter.Engine(store=f"sqlite://{tmp_path}/c.db")
    engine.register_node("boom", lambda s: 1 / 0)
    wf = chatter.Workflow.builder().node("start", "start").node("b", "boom").edge("start", "b").build()
    result = engine.run(wf, raise_on_error=False)
    assert engine.list_executions(status="failed")[0]["id"] == result.execution_id
    assert engine.list_executions(status="completed") == []
    stored = engine.get_execution(result.execution_id)
    assert stored is not None
    assert "ZeroDivisionError" in stored["execution"]["error"]
    assert [r["status"] for r in stored["node_runs"] if r["node_id"] == "b"] == ["failed"]
