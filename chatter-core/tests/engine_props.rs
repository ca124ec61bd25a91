//! Property tests of the scheduler over random DAGs: every live node runs exactly once, dead
//! nodes never run (and are recorded as skipped), runs respect the edges, nothing deadlocks.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod engine_support;

use chatter_core::WorkflowDefinition;
use chatter_core::engine::{ExecutionStatus, Limits, NodeRunStatus, RunOptions};
use chatter_core::event::EventKind;
use proptest::prelude::*;
use serde_json::{Value, json};

#[derive(Debug, Clone)]
struct Spec {
    /// Per node: (is_branch, take_a, join_any, sleep_ms).
    nodes: Vec<(bool, bool, bool, u64)>,
    /// (source, target, handle_a), source < target.
    edges: Vec<(usize, usize, bool)>,
    concurrency: usize,
}

fn spec() -> impl Strategy<Value = Spec> {
    (2usize..14).prop_flat_map(|n| {
        let nodes = proptest::collection::vec(
            (
                any::<bool>(),
                any::<bool>(),
                prop::bool::weighted(0.2),
                0u64..4,
            ),
            n,
        );
        // Each node i > 0 gets 1..=3 in-edges from earlier nodes.
        let edges = proptest::collection::vec(
            proptest::collection::vec((any::<prop::sample::Index>(), any::<bool>()), 1..=3),
            n - 1,
        );
        (nodes, edges, 1usize..5).prop_map(move |(nodes, ins, concurrency)| {
            let mut edges = Vec::new();
            for (k, sources) in ins.into_iter().enumerate() {
                let target = k + 1;
                let mut seen = Vec::new();
                for (idx, handle_a) in sources {
                    let source = idx.index(target);
                    if !seen.contains(&source) {
                        seen.push(source);
                        edges.push((source, target, handle_a));
                    }
                }
            }
            Spec {
                nodes,
                edges,
                concurrency,
            }
        })
    })
}

fn definition(spec: &Spec) -> WorkflowDefinition {
    let nodes: Vec<Value> = spec
        .nodes
        .iter()
        .enumerate()
        .map(|(i, &(branch, take_a, any, sleep))| {
            let kind = if i == 0 {
                "start"
            } else if branch {
                "branch"
            } else {
                "sleep"
            };
            let mut config = json!({"ms": sleep, "take": if take_a { "a" } else { "b" }});
            if any {
                config["join"] = json!("any");
            }
            json!({"id": format!("n{i}"), "type": kind, "config": config})
        })
        .collect();
    let edges: Vec<Value> = spec
        .edges
        .iter()
        .map(|&(s, t, a)| {
            json!({"source": format!("n{s}"), "target": format!("n{t}"),
                   "sourceHandle": if a { "a" } else { "b" }})
        })
        .collect();
    WorkflowDefinition::from_value(&json!({"nodes": nodes, "edges": edges})).unwrap()
}

/// Which nodes are live, computed independently of the engine.
fn expected_live(spec: &Spec) -> Vec<bool> {
    let n = spec.nodes.len();
    let mut live = vec![false; n];
    live[0] = true;
    for i in 1..n {
        live[i] = spec
            .edges
            .iter()
            .any(|&(s, t, a)| t == i && taken(spec, s, a, &live));
    }
    live
}

fn taken(spec: &Spec, source: usize, handle_a: bool, live: &[bool]) -> bool {
    let (branch, take_a, _, _) = spec.nodes[source];
    live[source] && (source == 0 || !branch || handle_a == take_a)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_dags_run_every_live_node_once_in_edge_order(spec in spec()) {
        let def = definition(&spec);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let limits = Limits::default().max_concurrency(spec.concurrency);
        let r = rt.block_on(engine_support::engine().run(
            &def,
            json!({}),
            RunOptions::default().limits(limits),
        )).unwrap();
        prop_assert_eq!(r.status, ExecutionStatus::Completed);
        let live = expected_live(&spec);
        let seqs: Vec<u64> = r.events.iter().map(|e| e.seq).collect();
        prop_assert_eq!(seqs, (1..=r.events.len() as u64).collect::<Vec<_>>());
        let mut started = vec![None; live.len()];
        let mut done = vec![None; live.len()];
        for (pos, e) in r.events.iter().enumerate() {
            match &e.kind {
                EventKind::NodeStarted { node_id, .. } => {
                    let i: usize = node_id[1..].parse().unwrap();
                    prop_assert!(started[i].is_none(), "n{} started twice", i);
                    started[i] = Some(pos);
                }
                EventKind::NodeCompleted { node_id, .. } => {
                    let i: usize = node_id[1..].parse().unwrap();
                    done[i] = Some(pos);
                }
                _ => {}
            }
        }
        for (i, &is_live) in live.iter().enumerate() {
            let id = format!("n{i}");
            let runs: Vec<_> = r.runs_of(&id).collect();
            prop_assert_eq!(runs.len(), 1, "n{} has runs {:?}", i, runs);
            let want = if is_live { NodeRunStatus::Completed } else { NodeRunStatus::Skipped };
            prop_assert_eq!(runs[0].status, want, "n{}", i);
            prop_assert_eq!(started[i].is_some(), is_live, "dead n{} started", i);
            if !is_live || i == 0 {
                continue;
            }
            let preds: Vec<usize> = spec
                .edges
                .iter()
                .filter(|&&(s, t, a)| t == i && taken(&spec, s, a, &live))
                .map(|&(s, _, _)| s)
                .collect();
            let start = started[i].unwrap();
            let finished_before: Vec<bool> =
                preds.iter().map(|&p| done[p].is_some_and(|d| d < start)).collect();
            if spec.nodes[i].2 {
                prop_assert!(finished_before.iter().any(|&b| b), "join any n{} ran early", i);
            } else {
                prop_assert!(finished_before.iter().all(|&b| b), "n{} ran before a predecessor", i);
            }
        }
    }
}

/// A structured program: its graph has branches with joins and (nested) loops.
#[derive(Debug, Clone)]
enum Block {
    /// A node that sleeps this many milliseconds (0: finishes at once).
    Node(u64),
    If(bool, Vec<Block>, Vec<Block>),
    Loop(u32, Vec<Block>),
}

fn block() -> impl Strategy<Value = Block> {
    let leaf = (0u64..3).prop_map(Block::Node);
    leaf.prop_recursive(3, 24, 3, |inner| {
        prop_oneof![
            2 => (0u64..3).prop_map(Block::Node),
            1 => (any::<bool>(), proptest::collection::vec(inner.clone(), 0..3),
                  proptest::collection::vec(inner.clone(), 0..3))
                .prop_map(|(t, a, b)| Block::If(t, a, b)),
            1 => (0u32..4, proptest::collection::vec(inner, 0..3))
                .prop_map(|(n, body)| Block::Loop(n, body)),
        ]
    })
}

struct Builder {
    nodes: Vec<Value>,
    edges: Vec<Value>,
}

impl Builder {
    fn node(&mut self, kind: &str, config: Value) -> String {
        let id = format!("n{}", self.nodes.len());
        self.nodes
            .push(json!({"id": id, "type": kind, "config": config}));
        id
    }
    fn edge(&mut self, from: &(String, Option<&str>), to: &str) {
        let mut e = json!({"source": from.0, "target": to});
        if let Some(h) = from.1 {
            e["sourceHandle"] = json!(h);
        }
        self.edges.push(e);
    }
    /// Emits a sequence after `entry`; returns its exit.
    fn seq(
        &mut self,
        blocks: &[Block],
        mut entry: (String, Option<&'static str>),
    ) -> (String, Option<&'static str>) {
        for b in blocks {
            entry = match b {
                Block::Node(ms) => {
                    let id = self.node("sleep", json!({"ms": ms}));
                    self.edge(&entry, &id);
                    (id, None)
                }
                Block::If(take, yes, no) => {
                    let id = self.node(
                        "branch",
                        json!({"take": if *take { "true" } else { "false" }}),
                    );
                    self.edge(&entry, &id);
                    let a = self.seq(yes, (id.clone(), Some("true")));
                    let b = self.seq(no, (id, Some("false")));
                    let join = self.node("noop", json!({}));
                    self.edge(&a, &join);
                    self.edge(&b, &join);
                    (join, None)
                }
                Block::Loop(passes, body) => {
                    let id = self.node("loop", json!({"max_iterations": passes}));
                    self.edge(&entry, &id);
                    let end = self.seq(body, (id.clone(), Some("continue")));
                    self.edge(&end, &id);
                    (id, Some("done"))
                }
            };
        }
        entry
    }
}

/// The expected trace of a sequence: `iteration` is the pass of the innermost enclosing loop.
fn expect(blocks: &[Block], next: &mut usize, pass: u32, out: &mut Vec<String>, live: bool) {
    for b in blocks {
        let id = *next;
        *next += 1;
        match b {
            Block::Node(_) => {
                if live {
                    out.push(format!("n{id}#{pass}"));
                }
            }
            Block::If(take, yes, no) => {
                if live {
                    out.push(format!("n{id}#{pass}"));
                }
                expect(yes, next, pass, out, live && *take);
                expect(no, next, pass, out, live && !*take);
                let join = *next;
                *next += 1;
                if live {
                    out.push(format!("n{join}#{pass}"));
                }
            }
            Block::Loop(passes, body) => {
                if !live {
                    let mut skip = Vec::new();
                    expect(body, next, 0, &mut skip, false);
                    continue;
                }
                let start = *next;
                for p in 0..*passes {
                    out.push(format!("n{id}#{p}"));
                    *next = start;
                    expect(body, next, p, out, true);
                }
                out.push(format!("n{id}#{passes}"));
                if *passes == 0 {
                    let mut skip = Vec::new();
                    expect(body, next, 0, &mut skip, false);
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn structured_graphs_with_nested_loops_and_joins_run_as_written(
        blocks in proptest::collection::vec(block(), 1..4)
    ) {
        let mut b = Builder { nodes: Vec::new(), edges: Vec::new() };
        let start = b.node("start", json!({"trace": false}));
        let exit = b.seq(&blocks, (start, None));
        let end = b.node("end", json!({"trace": false}));
        b.edge(&exit, &end);
        let def = WorkflowDefinition::from_value(&json!({"nodes": b.nodes, "edges": b.edges})).unwrap();
        let mut want = Vec::new();
        let mut next = 1;
        expect(&blocks, &mut next, 0, &mut want, true);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let r = rt.block_on(engine_support::engine().run(
            &def,
            json!({}),
            RunOptions::default().limits(Limits::default().max_steps(100_000)),
        )).unwrap();
        prop_assert_eq!(r.status, ExecutionStatus::Completed, "{:?}", r.error);
        prop_assert_eq!(engine_support::trace(&r), want);
        prop_assert_eq!(r.runs_of(&end).filter(|n| n.status == NodeRunStatus::Completed).count(), 1);
    }
}
