"""10 000 runs with flat memory."""

from __future__ import annotations

import gc
import os
import resource
import subprocess
import sys
from typing import Any

import chatter

from conftest import counting_loop


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


DURABLE_LOOP = """
import os, sys
import chatter

assert "MIMALLOC_ARENA_EAGER_COMMIT" not in os.environ, "the import left its setting behind"
engine = chatter.Engine(store=f"sqlite://{sys.argv[1]}")
engine.register_node("inc", lambda s: {"i": s["variables"].get("i", 0) + 1})
wf = chatter.Workflow.from_json(sys.argv[2])
for _ in range(150):
    assert engine.run(wf, {}, events=False).variables["i"] == 100
# The peak of this process's own memory (`ru_maxrss` would include the parent's at the fork).
with open("/proc/self/status") as f:
    print(next(line.split()[1] for line in f if line.startswith("VmHWM:")))
"""


def test_durable_runs_keep_a_small_footprint(tmp_path: Any) -> None:
    """150 durable runs of a 100-iteration loop (30 000 committed steps) on SQLite. With its
    memory arenas committed eagerly, the extension's allocator made such a process hold about
    90 MiB (130 MiB over 800 runs) where transparent huge pages are on; the package turns that
    off while the extension loads (45 MiB), leaves the environment as it found it, and keeps a
    value the user set."""
    env = {k: v for k, v in os.environ.items() if k != "MIMALLOC_ARENA_EAGER_COMMIT"}
    out = subprocess.run(
        [sys.executable, "-c", DURABLE_LOOP, str(tmp_path / "loop.db"), counting_loop().to_json()],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    peak_mib = int(out.stdout.split()[-1]) / 1024
    assert peak_mib < 72, f"peak RSS {peak_mib:.0f} MiB"

    keep = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, chatter; print(os.environ['MIMALLOC_ARENA_EAGER_COMMIT'])",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "MIMALLOC_ARENA_EAGER_COMMIT": "1"},
    )
    assert keep.returncode == 0, keep.stderr
    assert keep.stdout.strip() == "1"
