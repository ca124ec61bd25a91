//! Validating definitions: a 1 000-node / 2 000-edge graph (target: under 5 ms) with conditions
//! on a third of its edges, the same graph with a distinct condition on every skip edge (1 000
//! expressions to compile: the worst case), and the old platform's universal-chat graph.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::hint::black_box;

use chatter_core::{ValidatorConfig, WorkflowDefinition, WorkflowValidator};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};

/// A layered graph: start, then `n - 2` llm/variable/tool nodes, then end; every node has an edge
/// to the next one and a skip edge to the one after it, so edges ≈ 2n. A skip edge carries a
/// distinct condition on a variable every `condition_every` nodes (1: all of them).
fn large_definition(n: usize, condition_every: usize) -> Value {
    let mut nodes = vec![json!({"id": "n0", "type": "start"})];
    for i in 1..n - 1 {
        let node = match i % 3 {
            0 => json!({"id": format!("n{i}"), "type": "llm",
                        "config": {"provider": "scripted", "max_tokens": 256,
                                   "system_prompt": "Step {{ node.id }} of {{ variables.total | default(0) }}"}}),
            1 => json!({"id": format!("n{i}"), "type": "variable",
                        "config": {"operation": "increment", "variable_name": format!("v{i}")}}),
            _ => json!({"id": format!("n{i}"), "type": "tool", "config": {"max_total_calls": 5}}),
        };
        nodes.push(node);
    }
    nodes.push(json!({"id": format!("n{}", n - 1), "type": "end"}));
    let mut edges = Vec::new();
    for i in 0..n - 1 {
        edges.push(json!({"source": format!("n{i}"), "target": format!("n{}", i + 1)}));
        if i + 2 < n {
            let mut edge = json!({"source": format!("n{i}"), "target": format!("n{}", i + 2)});
            if i % condition_every == 0 {
                edge["condition"] = json!(format!("variables.v{} > 3", i + 1));
            }
            edges.push(edge);
        }
    }
    json!({"nodes": nodes, "edges": edges})
}

fn bench_validate(c: &mut Criterion) {
    let big = WorkflowDefinition::from_value(&large_definition(1000, 3)).expect("definition");
    assert!(big.edges.len() >= 1990, "{} edges", big.edges.len());
    let worst = WorkflowDefinition::from_value(&large_definition(1000, 1)).expect("definition");
    let mut config = ValidatorConfig::default();
    config.max_nodes = 10_000;
    config.max_edges = 10_000;
    let validator = WorkflowValidator::new(config);
    assert!(validator.validate(&big).is_valid());
    assert!(validator.validate(&worst).is_valid());
    c.bench_function("validate_1000_nodes_2000_edges", |b| {
        b.iter(|| black_box(validator.validate(black_box(&big))))
    });
    c.bench_function("validate_1000_nodes_2000_edges_1000_conditions", |b| {
        b.iter(|| black_box(validator.validate(black_box(&worst))))
    });

    let legacy_text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/workflows/legacy-universal-chat.json"
    ))
    .expect("example");
    let legacy = WorkflowDefinition::from_json(&legacy_text).expect("definition");
    let default_validator = WorkflowValidator::default();
    c.bench_function("validate_universal_chat", |b| {
        b.iter(|| black_box(default_validator.validate(black_box(&legacy))))
    });
    c.bench_function("parse_universal_chat_json", |b| {
        b.iter(|| black_box(WorkflowDefinition::from_json(black_box(&legacy_text))))
    });
}

criterion_group!(benches, bench_validate);
criterion_main!(benches);
