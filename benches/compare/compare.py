"""Side-by-side benchmark: Chatter (Python binding) against LangGraph, the same graphs in both.

Scenarios (every node body is a Python function that does nothing or nearly nothing, so what is
measured is the framework's own overhead per step):

* ``chain10`` / ``chain1000``: chains of 10 and 1 000 no-op Python nodes;
* ``fanout50``: one node fanning out to 50 parallel no-op nodes, joined by one node;
* ``loop100``: a conditional loop that runs its Python node 100 times;
* ``react``: a ReAct agent loop with a fake model (5 tool rounds, then an answer).

Modes: ``memory`` (both), ``sqlite`` (LangGraph's SqliteSaver, a checkpoint per superstep;
Chatter's SQLite store: each step — node run, state delta, events — recorded). ``--durability``
(``sync``, the default, ``async`` or ``exit``) is passed to both: Chatter's ``Engine(durability=)``
and LangGraph's ``invoke(durability=)``, whose meanings match (``sync``: each step committed
before the next starts; ``async``: committed while the next runs; ``exit``: when the run ends).
LangGraph's own default is ``async``; Chatter's is ``sync``. See docs/performance.md.

Each (framework, scenario, mode) runs in its own process so peak RSS is its own. Timing: warm
up, then ``--reps`` repetitions of a batch of runs; the table shows medians over repetitions.
``--rounds N`` runs each pair of workers N times, alternating the frameworks, and shows the
median round with the range of the rounds' ratios: on a machine whose speed drifts, the ratio of
two workers run minutes apart moves by a third.

    bash benches/compare/run.sh            # creates the venv, builds the wheel, runs this
    python benches/compare/compare.py --quick
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Annotated, Any, Callable, TypedDict

SCENARIOS = ["chain10", "chain1000", "fanout50", "loop100", "react"]
# Python node executions per run (the "steps" per-step overhead is divided by).
STEPS = {"chain10": 10, "chain1000": 1000, "fanout50": 52, "loop100": 100, "react": 11}
REACT_ROUNDS = 5


def noop(state: Any) -> dict[str, Any]:
    return {}


class FakeModel:
    """Asks for `lookup` REACT_ROUNDS times, then answers."""

    def reply(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        rounds = sum(1 for m in messages if m["role"] == "tool")
        if rounds < REACT_ROUNDS:
            call = {"id": f"c{rounds}", "name": "lookup", "arguments": {"q": f"q{rounds}"}}
            return {"role": "assistant", "content": "", "tool_calls": [call]}
        return {"role": "assistant", "content": f"done after {rounds} lookups"}

    # Chatter's model protocol
    def chat(self, request: dict[str, Any]) -> dict[str, Any]:
        return self.reply(request["messages"])


def lookup(q: str) -> str:
    return q


# ---------------------------------------------------------------------------------------------
# Chatter
# ---------------------------------------------------------------------------------------------


def chatter_runner(scenario: str, mode: str, db_path: str, durability: str = "sync") -> Callable[[], Any]:
    import chatter

    store = f"sqlite://{db_path}" if mode == "sqlite" else None
    engine = chatter.Engine(
        max_nodes=1100,
        max_edges=1100,
        limits={"max_steps": 5000},
        store=store,
        durability=durability if store else None,
    )
    engine.register_node("noop", lambda s: None)
    b = chatter.Workflow.builder().node("start", "start")
    inp: Any = None
    if scenario.startswith("chain"):
        n = int(scenario[len("chain"):])
        prev = "start"
        for i in range(n):
            b = b.node(f"n{i}", "noop").edge(prev, f"n{i}")
            prev = f"n{i}"
        b = b.node("end", "end").edge(prev, "end")
    elif scenario == "fanout50":
        b = b.node("src", "noop").edge("start", "src").node("join", "noop").node("end", "end")
        for i in range(50):
            b = b.node(f"b{i}", "noop").edge("src", f"b{i}").edge(f"b{i}", "join")
        b = b.edge("join", "end")
    elif scenario == "loop100":
        engine.register_node("inc", lambda s: {"i": s["variables"].get("i", 0) + 1})
        b = (
            b.node("inc", "inc")
            .node("check", "conditional", condition="variables.i < 100")
            .node("end", "end")
            .edge("start", "inc")
            .edge("inc", "check")
            .edge("check", "inc", branch="true")
            .edge("check", "end", branch="false")
        )
    elif scenario == "react":
        engine.register_model("fake", FakeModel(), default=True)
        engine.register_tool("lookup", lookup)
        b = (
            b.node("agent", "llm", enable_tools=True)
            .node("tools", "tool", max_consecutive_calls=100)
            .node("end", "end")
            .edge("start", "agent")
            .edge("agent", "tools", condition="has_tool_calls")
            .edge("agent", "end")
            .edge("tools", "agent")
        )
        inp = "go"
    wf = b.build()

    def run() -> Any:
        r = engine.run(wf, inp, events=False)
        return r

    r = run()
    if scenario == "loop100":
        assert r.variables["i"] == 100, r.variables
    if scenario == "react":
        assert r.response == f"done after {REACT_ROUNDS} lookups", r.response
    return run


# ---------------------------------------------------------------------------------------------
# LangGraph
# ---------------------------------------------------------------------------------------------


def langgraph_runner(scenario: str, mode: str, db_path: str, durability: str = "sync") -> Callable[[], Any]:
    from langgraph.graph import END, START, StateGraph

    class S(TypedDict, total=False):
        i: int
        messages: Annotated[list, operator.add]

    g = StateGraph(S)
    inp: dict[str, Any] = {}
    if scenario.startswith("chain"):
        n = int(scenario[len("chain"):])
        prev = START
        for i in range(n):
            g.add_node(f"n{i}", noop)
            g.add_edge(prev, f"n{i}")
            prev = f"n{i}"
        g.add_edge(prev, END)
    elif scenario == "fanout50":
        g.add_node("src", noop)
        g.add_node("join", noop)
        g.add_edge(START, "src")
        names = []
        for i in range(50):
            g.add_node(f"b{i}", noop)
            g.add_edge("src", f"b{i}")
            names.append(f"b{i}")
        g.add_edge(names, "join")
        g.add_edge("join", END)
    elif scenario == "loop100":
        g.add_node("inc", lambda s: {"i": s.get("i", 0) + 1})
        g.add_edge(START, "inc")
        g.add_conditional_edges("inc", lambda s: "inc" if s["i"] < 100 else END)
        inp = {"i": 0}
    elif scenario == "react":
        model = FakeModel()

        def agent(s: S) -> dict[str, Any]:
            return {"messages": [model.reply(s["messages"])]}

        def tools(s: S) -> dict[str, Any]:
            out = []
            for call in s["messages"][-1]["tool_calls"]:
                out.append({"role": "tool", "tool_call_id": call["id"], "content": lookup(**call["arguments"])})
            return {"messages": out}

        g.add_node("agent", agent)
        g.add_node("tools", tools)
        g.add_edge(START, "agent")
        g.add_conditional_edges("agent", lambda s: "tools" if s["messages"][-1].get("tool_calls") else END)
        g.add_edge("tools", "agent")
        inp = {"messages": [{"role": "user", "content": "go"}]}

    checkpointer = None
    if mode == "sqlite":
        import sqlite3

        from langgraph.checkpoint.sqlite import SqliteSaver

        conn = sqlite3.connect(db_path, check_same_thread=False)
        checkpointer = SqliteSaver(conn)
    app = g.compile(checkpointer=checkpointer)
    base = {"recursion_limit": 5000}

    def run() -> Any:
        config = dict(base)
        if checkpointer is None:
            return app.invoke(dict(inp), config)
        config["configurable"] = {"thread_id": uuid.uuid4().hex}
        return app.invoke(dict(inp), config, durability=durability)

    r = run()
    if scenario == "loop100":
        assert r["i"] == 100, r
    if scenario == "react":
        assert r["messages"][-1]["content"] == f"done after {REACT_ROUNDS} lookups"
    return run


# ---------------------------------------------------------------------------------------------
# Worker and orchestrator
# ---------------------------------------------------------------------------------------------


def worker(
    framework: str, scenario: str, mode: str, reps: int, min_batch_s: float, clock: str, durability: str
) -> dict[str, Any]:
    now = time.process_time if clock == "cpu" else time.perf_counter
    with tempfile.TemporaryDirectory() as tmp:
        db = os.path.join(tmp, "bench.db")
        try:
            if framework == "chatter":
                run = chatter_runner(scenario, mode, db, durability)
            else:
                run = langgraph_runner(scenario, mode, db, durability)
        except NotImplementedError as e:
            return {"error": str(e)}
        # Calibrate a batch size so one repetition lasts at least min_batch_s.
        t0 = now()
        run()
        one = max(now() - t0, 1e-7)
        batch = max(1, int(min_batch_s / one))
        for _ in range(min(batch, 50)):
            run()
        times = []
        runs = 0
        for _ in range(reps):
            t0 = now()
            for _ in range(batch):
                run()
            times.append((now() - t0) / batch)
            runs += batch
        disk = 0
        if mode == "sqlite":
            for f in os.listdir(tmp):
                disk += os.path.getsize(os.path.join(tmp, f))
        total_runs = runs + 2 + min(batch, 50)
        return {
            "run_s": statistics.median(times),
            "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "disk_bytes_per_run": disk / total_runs if mode == "sqlite" else 0,
            "runs": total_runs,
        }


def median_round(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The round of median time (the lower middle one of an even count), with the largest peak
    RSS of all rounds."""
    if any("error" in r for r in results):
        return next(r for r in results if "error" in r)
    ordered = sorted(results, key=lambda r: r["run_s"])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["peak_rss_kib"] = max(r["peak_rss_kib"] for r in results)
    return chosen


def fmt_time(s: float) -> str:
    if s < 1e-3:
        return f"{s * 1e6:.1f} µs"
    if s < 1:
        return f"{s * 1e3:.2f} ms"
    return f"{s:.2f} s"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", nargs=3, metavar=("FRAMEWORK", "SCENARIO", "MODE"))
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--batch-seconds", type=float, default=0.3)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--modes", default="memory,sqlite")
    ap.add_argument("--quick", action="store_true", help="3 reps of 0.1 s batches")
    ap.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="time runs by the wall clock (default) or by the process's CPU time (steadier on a "
        "machine other jobs load: both frameworks run their graphs on the calling thread)",
    )
    ap.add_argument(
        "--durability",
        choices=("sync", "async", "exit"),
        default="sync",
        help="durability of the sqlite mode, the same for both frameworks (default sync)",
    )
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run each pair of workers this many times, alternating the frameworks; the table "
        "shows the median round's times and, after the ratio, the range of the rounds' ratios "
        "(for a noisy machine)",
    )
    ap.add_argument("--markdown", help="also write the table to this file")
    args = ap.parse_args()
    if args.quick:
        args.reps, args.batch_seconds = 3, 0.1
    if args.worker:
        print(json.dumps(worker(*args.worker, args.reps, args.batch_seconds, args.clock, args.durability)))
        return

    import importlib.metadata as md

    versions = {p: md.version(p) for p in ("chatter", "langgraph", "langgraph-checkpoint-sqlite")}
    rows = []
    for mode in args.modes.split(","):
        for scenario in args.scenarios.split(","):
            rounds: dict[str, list[dict[str, Any]]] = {"chatter": [], "langgraph": []}
            for _ in range(max(1, args.rounds)):
                for fw in ("chatter", "langgraph"):
                    out = subprocess.run(
                        [sys.executable, __file__, "--worker", fw, scenario, mode, "--reps",
                         str(args.reps), "--batch-seconds", str(args.batch_seconds), "--clock",
                         args.clock, "--durability", args.durability],
                        capture_output=True, text=True,
                    )
                    if out.returncode != 0:
                        sys.exit(f"worker {fw} {scenario} {mode} failed:\n{out.stderr}")
                    rounds[fw].append(json.loads(out.stdout.strip().splitlines()[-1]))
                    print(f"# {mode} {scenario} {fw}: {rounds[fw][-1]}", file=sys.stderr)
            rows.append((mode, scenario, rounds))

    lines = [
        f"Versions: chatter {versions['chatter']}, langgraph {versions['langgraph']}, "
        f"langgraph-checkpoint-sqlite {versions['langgraph-checkpoint-sqlite']}; "
        f"Python {sys.version.split()[0]}; {os.cpu_count()} cores; medians of {args.reps} repetitions"
        f"{f' (the median of {args.rounds} alternating rounds; ratio range over the rounds)' if args.rounds > 1 else ''}; "
        f"{'process CPU time' if args.clock == 'cpu' else 'wall-clock time'}; "
        f"sqlite durability `{args.durability}` on both sides.",
        "",
        "| mode | graph | steps | Chatter per step | LangGraph per step | overhead ratio | Chatter runs/s | LangGraph runs/s | Chatter peak RSS | LangGraph peak RSS | Chatter disk / run | LangGraph disk / run |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, scenario, rounds in rows:
        c, lg = median_round(rounds["chatter"]), median_round(rounds["langgraph"])
        steps = STEPS[scenario]
        lg_step = lg["run_s"] / steps
        if "error" in c:
            cstep = crate = crss = ratio = "n/a"
        else:
            cstep = fmt_time(c["run_s"] / steps)
            crate = f"{1 / c['run_s']:,.0f}"
            crss = f"{c['peak_rss_kib'] / 1024:.0f} MiB"
            ratio = f"{lg['run_s'] / c['run_s']:.1f}x"
            if len(rounds["chatter"]) > 1:
                each = [b["run_s"] / a["run_s"] for a, b in zip(rounds["chatter"], rounds["langgraph"])]
                ratio += f" ({min(each):.1f}–{max(each):.1f})"
        disk = f"{lg['disk_bytes_per_run']:,.0f} B" if mode == "sqlite" else "—"
        cdisk = f"{c['disk_bytes_per_run']:,.0f} B" if mode == "sqlite" and "error" not in c else "—"
        lines.append(
            f"| {mode} | {scenario} | {steps} | {cstep} | {fmt_time(lg_step)} | {ratio} | {crate} | "
            f"{1 / lg['run_s']:,.0f} | {crss} | {lg['peak_rss_kib'] / 1024:.0f} MiB | {cdisk} | {disk} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
