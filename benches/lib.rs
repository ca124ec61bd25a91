//! Criterion benchmarks of Chatter (`cargo bench -p chatter-benches`), and what several of
//! them share: a no-op node, chains of it, and paired timing of two operations.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chatter_core::engine::{Engine, EngineBuilder, Limits};
use chatter_core::store::{ExecutionKind, NewDefinition, Store};
use chatter_core::tracker::ExecutionMeta;
use chatter_core::{
    Node, NodeContext, NodeOutput, NodeSpec, Result, ValidatorConfig, WorkflowBuilder,
    WorkflowDefinition,
};

/// A node that does nothing (registered as `noop` by the benches).
#[derive(Debug, Clone, Copy, Default)]
pub struct Noop;

#[async_trait]
impl Node for Noop {
    async fn run(&self, _ctx: NodeContext) -> Result<NodeOutput> {
        Ok(NodeOutput::default())
    }
}

/// A chain `n0 → n1 → … → n{n-1}` of `noop` nodes (flat shape).
///
/// # Panics
///
/// When `n` is 0 (no definition without nodes).
#[must_use]
#[allow(clippy::expect_used)]
pub fn chain(n: usize) -> WorkflowDefinition {
    let mut b = WorkflowBuilder::new().flat();
    for i in 0..n {
        b = b.node(format!("n{i}"), "noop");
        if i > 0 {
            b = b.edge(format!("n{}", i - 1), format!("n{i}"));
        }
    }
    b.build().expect("a chain of noop nodes is a definition")
}

/// An engine builder for big benchmark graphs: up to 10 000 nodes, 20 000 edges and 100 000
/// steps, with [`Noop`] registered as `noop`.
pub fn engine_builder() -> EngineBuilder {
    let mut validator = ValidatorConfig::default();
    validator.max_nodes = 10_000;
    validator.max_edges = 20_000;
    Engine::builder()
        .validator(validator)
        .limits(Limits::default().max_steps(100_000))
        .register_node("noop", |_: &NodeSpec| Ok(Arc::new(Noop) as Arc<dyn Node>))
}

/// Stores `def` once for the owner `bench`; returns what its executions record (the
/// definition's id, not the graph).
///
/// # Errors
///
/// The store's errors.
pub async fn stored_definition(
    store: &Arc<dyn Store>,
    def: &WorkflowDefinition,
) -> Result<ExecutionMeta> {
    let record = store
        .create_definition(NewDefinition {
            owner_id: "bench".into(),
            name: "bench".into(),
            definition: def.to_value(),
            ..NewDefinition::default()
        })
        .await?;
    Ok(ExecutionMeta::new("bench", ExecutionKind::Definition).definition(record.id))
}

/// The median, p10, p90 and p99 of two operations timed alternately `rounds` times, so that
/// a machine whose speed drifts (shared cores, a disk's sync latency) affects both equally.
#[derive(Debug, Clone, Copy)]
pub struct Paired {
    /// `[p10, median, p90, p99]` of the first operation.
    pub a: [Duration; 4],
    /// `[p10, median, p90, p99]` of the second operation.
    pub b: [Duration; 4],
}

impl Paired {
    /// Times `a` then `b`, `rounds` times.
    pub fn measure(rounds: usize, mut a: impl FnMut(), mut b: impl FnMut()) -> Paired {
        let rounds = rounds.max(1);
        let mut ta = Vec::with_capacity(rounds);
        let mut tb = Vec::with_capacity(rounds);
        for _ in 0..rounds {
            let t = std::time::Instant::now();
            a();
            ta.push(t.elapsed());
            let t = std::time::Instant::now();
            b();
            tb.push(t.elapsed());
        }
        Paired {
            a: percentiles(ta),
            b: percentiles(tb),
        }
    }

    /// The first median over the second.
    #[must_use]
    pub fn ratio(&self) -> f64 {
        self.a[1].as_secs_f64() / self.b[1].as_secs_f64()
    }

    /// Prints both medians, their ratio and the percentiles, naming the operations.
    pub fn print(&self, label: &str, a: &str, b: &str, rounds: usize) {
        println!(
            "{label} paired medians over {rounds} rounds: {a} {:?}, {b} {:?}, ratio {:.2}",
            self.a[1],
            self.b[1],
            self.ratio()
        );
        println!(
            "{label} paired p10/p90/p99: {a} {:?}/{:?}/{:?}, {b} {:?}/{:?}/{:?}",
            self.a[0], self.a[2], self.a[3], self.b[0], self.b[2], self.b[3]
        );
    }
}

fn percentiles(mut v: Vec<Duration>) -> [Duration; 4] {
    v.sort();
    let pct = |p: usize| v[(v.len() * p / 100).min(v.len() - 1)];
    [pct(10), pct(50), pct(90), pct(99)]
}
