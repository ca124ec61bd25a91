"""10 000 runs with flat memory."""

from __future__ import annotations

import gc
import resource
from typing import Any

import chatter


def rss_kib() -> int:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() // 1024


def test_ten_thousand_runs_with_flat_memory() -> None:
    engine = chatter.Engine()
    engine.register_scripted("s", {"default": {"content": "hi there"}}, default=True)
    engine.register_tool("echo", lambda text: text)
    engine.register_node("step", lambda s: {"n": s["variables"].get("n", 0) + 1})
    wf = (
        chatter.Workflow.builder()
        .node("start", "start")
        .node("a", "step")
        .node("chat", "llm")
        .node("b", "step")
        .node("end", "end")
        .edge("start", "a")
        .edge("a", "chat")
        .edge("chat", "b")
        .edge("b", "end")
        .build()
    )

    def batch(n: int) -> None:
        for i in range(n):
            r = engine.run(wf, {"message": f"m{i}"})
            assert r.variables["n"] == 2 and r.response == "hi there"

    batch(1000)  # warm up allocator pools and caches
    gc.collect()
    before = rss_kib()
    batch(10_000)
    gc.collect()
    after = rss_kib()
    growth = after - before
    assert growth < 16 * 1024, f"RSS grew by {growth} KiB over 10 000 runs ({before} -> {after})"
