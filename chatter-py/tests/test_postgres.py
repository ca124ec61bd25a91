"""Persistence to Postgres and reading runs back.

Runs against ``CHATTER_TEST_POSTGRES_URL`` (``scripts/test.sh`` exports it when Postgres
answers on 127.0.0.1:5432). Without it the tests skip, except under CI (``CI=true``), where
they fail. Each test uses its own fresh schema (``Engine(pg_schema=...)``), dropped at the end
with ``psql`` when it is installed (the ``pg`` fixture, in ``conftest.py``).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import pytest

import chatter

from conftest import WeatherModel


def test_runs_are_persisted_to_postgres_and_read_back(
    pg: tuple[str, str], react: chatter.Workflow
) -> None:
    url, schema = pg
    engine = chatter.Engine(store=url, pg_schema=schema)
    assert engine.list_executions() == []  # a fresh schema
    engine.register_tool("weather", lambda city: f"sunny in {city}")
    engine.register_model("py", WeatherModel(), default=True)
    result = engine.run(react, "weather in Oslo")

    async def more() -> list[chatter.ExecutionResult]:
        return await asyncio.gather(*[engine.arun(react, f"weather in C{i}") for i in range(5)])

    others = asyncio.run(more())

    # A second engine on the same schema sees everything.
    reader = chatter.Engine(store=url, pg_schema=schema)
    listed = reader.list_executions()
    assert {e["id"] for e in listed} == {result.execution_id} | {r.execution_id for r in others}
    assert all(e["status"] == "completed" for e in listed)
    assert [e["id"] for e in reader.list_executions(limit=2)] == [e["id"] for e in listed[:2]]

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

    # Another schema of the same database holds none of it.
    other = chatter.Engine(store=url, pg_schema=f"{schema}_other")
    try:
        assert other.list_executions() == []
    finally:
        if shutil.which("psql"):
            subprocess.run(
                ["psql", url, "-q", "-c", f'DROP SCHEMA IF EXISTS "{schema}_other" CASCADE'],
                check=False,
                capture_output=True,
            )


def test_failed_runs_are_stored_as_failed_in_postgres(pg: tuple[str, str]) -> None:
    url, schema = pg
    engine = chatter.Engine(store=url, pg_schema=schema)
    engine.register_node("boom", lambda s: 1 / 0)
    wf = chatter.Workflow.builder().node("start", "start").node("b", "boom").edge("start", "b").build()
    result = engine.run(wf, raise_on_error=False)
    assert [e["id"] for e in engine.list_executions(status="failed")] == [result.execution_id]
    assert engine.list_executions(status="completed") == []
    stored = engine.get_execution(result.execution_id)
    assert stored is not None
    assert "ZeroDivisionError" in stored["execution"]["error"]
    assert [r["status"] for r in stored["node_runs"] if r["node_id"] == "b"] == ["failed"]


def test_bad_postgres_store_arguments(pg: tuple[str, str]) -> None:
    url, _ = pg
    with pytest.raises(chatter.StorageError, match="schema"):
        chatter.Engine(store=url, pg_schema="Not-A-Schema")
    with pytest.raises(TypeError, match="Postgres"):
        chatter.Engine(store="sqlite::memory:", pg_schema="x")
    with pytest.raises(chatter.StorageError):
        chatter.Engine(store="postgres://postgres@127.0.0.1:1/test")
