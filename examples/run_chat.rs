//! Runs the chat example with its scripted model and prints the events as they happen.
//!
//! `cargo run -p chatter-examples --example run_chat`

use std::sync::Arc;

use chatter_core::engine::{Engine, RunOptions};
use chatter_core::providers::ScriptedModel;
use chatter_core::{EventKind, ModelRegistry, WorkflowDefinition};
use futures::StreamExt;

#[tokio::main]
async fn main() -> Result<(), chatter_core::Error> {
    let def = WorkflowDefinition::load("examples/workflows/chat.json")?;
    let mut models = ModelRegistry::new();
    models.register(
        "scripted",
        Arc::new(ScriptedModel::from_file(
            "examples/workflows/chat.scripted.json",
        )?),
    );
    let engine = Engine::builder().models(models).build();
    let handle = engine.start(
        &def,
        serde_json::json!({"message": "hello"}),
        RunOptions::default(),
    )?;
    let mut events = handle.subscribe();
    while let Some(event) = events.next().await {
        match event.kind {
            EventKind::Token { text, .. } => print!("{text}"),
            EventKind::NodeCompleted { node_id, .. } => {
                println!("\n#{} node_completed {node_id}", event.seq)
            }
            other => println!("#{} {}", event.seq, other.type_name()),
        }
    }
    let result = handle.result().await?;
    println!("{:?}: {:?}", result.status, result.response);
    Ok(())
}
