"""Durable executions: approvals, resume, steps, fork and durability modes, on a SQLite file
and on Postgres (the ``pg`` fixture)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

import chatter

APPROVAL: dict[str, Any] = {
    "name": "ship",
    "nodes": [
        {"id": "start", "type": "start"},
        {
            "id": "ask",
            "type": "approval",
            "config": {"question": "Ship it?", "allowed_decisions": ["approve", "reject"]},
        },
        {"id": "ship", "type": "mark", "config": {"shipped": True}},
        {"id": "drop", "type": "mark", "config": {"shipped": False}},
        {"id": "end", "type": "end"},
    ],
    "edges": [
        {"source": "start", "target": "ask"},
        {"source": "ask", "target": "ship", "sourceHandle": "approve"},
        {"source": "ask", "target": "drop", "sourceHandle": "reject"},
        {"source": "ship", "target": "end"},
        {"source": "drop", "target": "end"},
    ],
}

CHAIN: dict[str, Any] = {
    "name": "chain",
    "nodes": [
        {"id": "start", "type": "start"},
        {"id": "a", "type": "set_x"},
        {"id": "b", "type": "double"},
        {"id": "end", "type": "end"},
    ],
    "edges": [
        {"source": "start", "target": "a"},
        {"source": "a", "target": "b"},
        {"source": "b", "target": "end"},
    ],
}


def _mark(state: dict[str, Any]) -> dict[str, Any]:
    return {"shipped": state["config"]["shipped"]}


def _set_x(state: dict[str, Any]) -> dict[str, Any]:
    return {"x": 1}


def _double(state: dict[str, Any]) -> dict[str, Any]:
    return {"y": state["variables"]["x"] * 2}


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Keyword arguments of an engine on a fresh store."""
    if request.param == "sqlite":
        yield {"store": f"sqlite://{tmp_path / 'durable.db'}"}
    else:
        url, schema = request.getfixturevalue("pg")
        yield {"store": url, "pg_schema": schema}


def _engine(store: dict[str, Any], **kwargs: Any) -> chatter.Engine:
    engine = chatter.Engine(**store, **kwargs)
    engine.register_node("mark", _mark)
    engine.register_node("set_x", _set_x)
    engine.register_node("double", _double)
    return engine


def test_approval_waits_refuses_a_wrong_decision_then_completes(store: dict[str, Any]) -> None:
    engine = _engine(store)
    result = engine.run(APPROVAL, {"message": "order 7"})
    assert result.status == "waiting"
    assert result.response is None
    asked = [e for e in result.events if isinstance(e, chatter.InterruptedEvent)]
    assert [(e.node_id, e.question, e.allowed_decisions) for e in asked] == [
        ("ask", "Ship it?", ["approve", "reject"])
    ]
    eid = result.execution_id
    before = engine.get_execution(eid)
    assert before is not None
    assert before["execution"]["status"] == "waiting"
    assert [(r["node_id"], r["status"]) for r in before["node_runs"]] == [
        ("start", "completed"),
        ("ask", "waiting"),
    ]

    with pytest.raises(chatter.ValidationError, match="maybe"):
        engine.approve(eid, "maybe")
    assert engine.get_execution(eid) == before  # nothing written
    with pytest.raises(chatter.ValidationError):
        engine.resume(eid)  # waiting for a decision
    assert engine.get_execution(eid) == before

    done = engine.approve(eid, "approve", {"note": "ok"})
    assert done.execution_id == eid
    assert done.status == "completed"
    assert done.variables["shipped"] is True
    assert done.variables["ask"]["decision"] == "approve"
    assert done.variables["ask"]["input"] == {"note": "ok"}
    stored = engine.get_execution(eid)
    assert stored is not None and stored["execution"]["status"] == "completed"
    ran = sorted(stored["node_runs"], key=lambda r: r["step"])
    assert [(r["node_id"], r["status"]) for r in ran] == [
        ("start", "completed"),
        ("ask", "completed"),
        ("drop", "skipped"),
        ("ship", "completed"),
        ("end", "completed"),
    ]
    seqs = [e["seq"] for e in stored["events"]]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # one sequence across the pause

    with pytest.raises(chatter.ValidationError, match="ended"):
        engine.approve(eid, "approve")
    with pytest.raises(chatter.NotFoundError):
        engine.approve("01NOSUCHEXECUTION000000000", "approve")
    with pytest.raises(chatter.NotFoundError):
        engine.steps("01NOSUCHEXECUTION000000000")
    with pytest.raises(TypeError):
        engine.approve(eid, 1)  # type: ignore[arg-type]


def test_cancel_a_waiting_execution_by_id(store: dict[str, Any]) -> None:
    engine = _engine(store)
    eid = engine.run(APPROVAL, "x").execution_id
    other = _engine(store)  # another process: the execution is not live in it
    other.cancel(eid, reason="nobody will decide")
    stored = engine.get_execution(eid)
    assert stored is not None
    assert stored["execution"]["status"] == "cancelled"
    assert stored["execution"]["error"] == "nobody will decide"
    last = stored["events"][-1]
    assert (last["event_type"], last["payload"]) == (
        "execution_cancelled",
        {"reason": "nobody will decide"},
    )
    assert [e["seq"] for e in stored["events"]] == list(range(1, len(stored["events"]) + 1))
    with pytest.raises(chatter.ValidationError, match="already ended"):
        engine.cancel(eid)
    with pytest.raises(chatter.ValidationError, match="ended"):
        engine.approve(eid, "approve")
    assert engine.get_execution(eid) == stored  # nothing changed by the refusals
    with pytest.raises(chatter.NotFoundError):
        engine.cancel("01NOSUCHEXECUTION000000000")


def test_rejection_with_a_new_engine_reads_the_graph_from_the_store(store: dict[str, Any]) -> None:
    eid = _engine(store).run(APPROVAL, "x").execution_id
    other = _engine(store)  # another process would do the same
    done = asyncio.run(other.aapprove(eid, "reject", node_id="ask"))
    assert done.status == "completed"
    assert done.variables["shipped"] is False
    assert done.variables["ask"]["decision"] == "reject"


def test_steps_list_each_step_with_its_state(store: dict[str, Any]) -> None:
    engine = _engine(store)
    result = engine.run(CHAIN, "go")
    steps = engine.steps(result.execution_id)
    assert [(s["step"], s["node_id"], s["status"]) for s in steps] == [
        (1, "start", "completed"),
        (2, "a", "completed"),
        (3, "b", "completed"),
        (4, "end", "completed"),
    ]
    assert "x" not in steps[0]["state"]["variables"]
    assert steps[1]["state"]["variables"]["x"] == 1
    assert "y" not in steps[1]["state"]["variables"]
    assert steps[2]["state"]["variables"]["y"] == 2


def test_fork_with_edited_variables_leaves_the_original(store: dict[str, Any]) -> None:
    engine = _engine(store)
    original = engine.run(CHAIN, "go")
    before = engine.get_execution(original.execution_id)
    forked = engine.fork(original.execution_id, 2, {"x": 21})
    assert forked.execution_id != original.execution_id
    assert forked.status == "completed"
    assert forked.variables["x"] == 21 and forked.variables["y"] == 42
    assert engine.get_execution(original.execution_id) == before
    assert [s["node_id"] for s in engine.steps(forked.execution_id)] == ["start", "a", "b", "end"]
    assert engine.steps(forked.execution_id)[2]["state"]["variables"]["y"] == 42

    again = asyncio.run(engine.afork(original.execution_id, 3))
    assert again.variables["y"] == 2
    for bad in (0, 99):
        with pytest.raises(chatter.ValidationError, match="step"):
            engine.fork(original.execution_id, bad)
    with pytest.raises(chatter.NotFoundError):
        engine.fork("01NOSUCHEXECUTION000000000", 1)


@pytest.mark.parametrize("mode", ["sync", "async", "exit"])
def test_durability_modes_record_the_whole_run(store: dict[str, Any], mode: str) -> None:
    engine = _engine(store, durability=mode)
    assert engine.durability == mode
    result = engine.run(CHAIN, "go")
    stored = engine.get_execution(result.execution_id)
    assert stored is not None
    assert stored["execution"]["status"] == "completed"
    runs = sorted(stored["node_runs"], key=lambda r: r["step"])
    assert [(r["node_id"], r["status"], r["step"]) for r in runs] == [
        (r.node_id, "completed", i) for i, r in enumerate(result.node_runs, start=1)
    ]
    assert [e["seq"] for e in stored["events"]] == [e.seq for e in result.events]
    assert len(engine.steps(result.execution_id)) == 4


def test_a_stored_run_records_its_events_when_the_caller_leaves_them_out(
    store: dict[str, Any],
) -> None:
    engine = _engine(store)
    result = engine.run(CHAIN, "go", events=False)
    assert result.events == []
    stored = engine.get_execution(result.execution_id)
    assert stored is not None
    types = [e["event_type"] for e in stored["events"]]
    assert types[0] == "execution_started" and types[-1] == "execution_completed"
    assert types.count("node_completed") == len(result.node_runs)


def test_sync_commits_each_step_before_the_next_node_and_exit_at_the_end(tmp_path: Path) -> None:
    seen: dict[str, list[tuple[str, str]]] = {}
    for mode in ("sync", "exit"):
        db = tmp_path / f"{mode}.db"
        engine = _engine({"store": f"sqlite://{db}"}, durability=mode)

        def peek(state: dict[str, Any], db: Path = db, mode: str = mode) -> dict[str, Any]:
            with sqlite3.connect(db) as conn:
                seen[mode] = conn.execute(
                    "SELECT node_id, status FROM workflow_node_runs"
                    " WHERE execution_id = ? AND status = 'completed' ORDER BY step",
                    ("run-" + mode,),
                ).fetchall()
            return {"y": 0}

        engine.register_node("double", peek)
        engine.run(CHAIN, "go", execution_id="run-" + mode)
    assert seen["sync"] == [("start", "completed"), ("a", "completed")]
    assert seen["exit"] == []


def test_a_blocking_durable_call_runs_python_on_the_callers_thread(store: dict[str, Any]) -> None:
    engine = _engine(store)
    seen: list[tuple[str, int]] = []

    def noting(name: str, out: dict[str, Any]) -> Any:
        def node(state: dict[str, Any]) -> dict[str, Any]:
            seen.append((name, threading.get_ident()))
            return out

        return node

    engine.register_node("set_x", noting("set_x", {"x": 1}))
    engine.register_node("mark", noting("mark", {"shipped": True}))
    here = threading.get_ident()
    assert engine.run(CHAIN, "go").status == "completed"
    assert seen == [("set_x", here)]

    # Another thread's `run` calls them on that thread.
    other: dict[str, Any] = {}

    def run_elsewhere() -> None:
        other["ident"] = threading.get_ident()
        other["status"] = engine.run(CHAIN, "go").status

    thread = threading.Thread(target=run_elsewhere)
    thread.start()
    thread.join()
    assert other["status"] == "completed"
    assert seen[1:] == [("set_x", other["ident"])]

    # So does the resume an approval makes.
    waiting = engine.run(APPROVAL, "x")
    assert waiting.status == "waiting"
    done = engine.approve(waiting.execution_id, "approve")
    assert done.status == "completed" and done.variables["shipped"] is True
    assert seen[2:] == [("mark", here)]


def test_durable_stream_records_what_it_yields(store: dict[str, Any]) -> None:
    engine = _engine(store)
    stream = engine.stream(APPROVAL, "x")
    events = list(stream)
    result = stream.result()
    assert result.status == "waiting"
    assert [e.type for e in events] == [
        "execution_started",
        "node_started",
        "node_completed",
        "node_started",
        "interrupted",
    ]
    stored = engine.get_execution(stream.execution_id)
    assert stored is not None and stored["execution"]["status"] == "waiting"
    assert [e["seq"] for e in stored["events"]] == [e.seq for e in events]
    assert engine.approve(stream.execution_id, "approve").status == "completed"


def test_resume_due_has_nothing_due_and_durability_needs_a_store(tmp_path: Path) -> None:
    engine = _engine({"store": f"sqlite://{tmp_path / 'due.db'}"})
    engine.run(APPROVAL, "x")  # waiting without a timeout: never due
    assert engine.resume_due() == []
    with pytest.raises(chatter.ConfigError, match="durability"):
        chatter.Engine(durability="sync")
    with pytest.raises(chatter.ConfigError, match="sometimes"):
        chatter.Engine(store=f"sqlite://{tmp_path / 'x.db'}", durability="sometimes")
    with pytest.raises(chatter.ConfigError, match="store"):
        chatter.Engine().steps("x")
