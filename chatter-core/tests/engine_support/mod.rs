//! Test node kinds, registered through the public factory API (the one node authors use).
//!
//! Every test node appends its id to `variables.trace` when it runs (unless `trace: false`), so
//! tests can assert the order of runs from the state as well as from the events.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chatter_core::engine::{Clock, Engine, EngineBuilder, ExecutionResult};
use chatter_core::event::EventKind;
use chatter_core::{
    Error, ErrorClass, Message, Node, NodeContext, NodeOutput, NodeSpec, Result, Route, StateDelta,
    Usage, VariableOp,
};
use serde_json::{Value, json};

/// What a test node does, read from its config.
struct TestNode {
    spec: NodeSpec,
    behaviour: Behaviour,
    failures: AtomicU32,
}

#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    Noop,
    Sleep,
    Flaky,
    Emit,
    Branch,
    Loop,
    Panic,
    Fail,
    Stop,
    Handler,
    Usage,
}

fn cfg_u64(spec: &NodeSpec, key: &str, default: u64) -> u64 {
    spec.config_value(key)
        .and_then(Value::as_u64)
        .unwrap_or(default)
}

fn cfg_str<'a>(spec: &'a NodeSpec, key: &str, default: &'a str) -> &'a str {
    spec.config_value(key)
        .and_then(Value::as_str)
        .unwrap_or(default)
}

fn class_of(name: &str) -> ErrorClass {
    match name {
        "timeout" => ErrorClass::Timeout,
        "rate_limit" => ErrorClass::RateLimit,
        "server" => ErrorClass::Server,
        "connection" => ErrorClass::Connection,
        "tool" => ErrorClass::Tool,
        "model" => ErrorClass::Model,
        _ => ErrorClass::Internal,
    }
}

impl TestNode {
    fn trace(&self, ctx: &NodeContext, delta: &mut StateDelta) {
        if self.spec.config_value("trace") != Some(&Value::Bool(false)) {
            delta.variables.push((
                "trace".into(),
                VariableOp::Append(json!(format!("{}#{}", ctx.node_id(), ctx.iteration))),
            ));
        }
        if let Some(Value::Object(set)) = self.spec.config_value("set") {
            for (k, v) in set {
                delta
                    .variables
                    .push((k.clone(), VariableOp::Set(v.clone())));
            }
        }
    }
}

#[async_trait]
impl Node for TestNode {
    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput> {
        let mut delta = StateDelta::default();
        let mut route = Route::Edges;
        let mut output = Value::Null;
        match self.behaviour {
            Behaviour::Noop => {}
            Behaviour::Sleep => {
                let ms = cfg_u64(&self.spec, "ms", 10);
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(ms)) => {}
                    () = ctx.cancel.cancelled() => {
                        return Err(Error::Cancelled { reason: "node saw cancel".into() });
                    }
                }
            }
            Behaviour::Flaky => {
                let k = cfg_u64(&self.spec, "fail_times", 1) as u32;
                let n = self.failures.fetch_add(1, Ordering::SeqCst);
                if n < k {
                    return Err(ctx.error(
                        class_of(cfg_str(&self.spec, "class", "server")),
                        format!("flaky failure {}", n + 1),
                    ));
                }
            }
            Behaviour::Emit => {
                let tokens: Vec<String> = self
                    .spec
                    .config_value("tokens")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default();
                for t in &tokens {
                    ctx.emit(EventKind::Token {
                        node_id: ctx.node_id().to_owned(),
                        text: t.clone(),
                    });
                    let pause = cfg_u64(&self.spec, "pause_ms", 0);
                    if pause > 0 {
                        tokio::time::sleep(Duration::from_millis(pause)).await;
                    }
                }
                let text = tokens.concat();
                delta.messages.push(Message::assistant(text.clone()));
                let n = tokens.len() as u64;
                delta.usage = Some(Usage {
                    prompt_tokens: n,
                    completion_tokens: n,
                    total_tokens: 2 * n,
                    cost: 0.0,
                });
                output = json!(text);
            }
            Behaviour::Branch => {
                route = Route::Branch(cfg_str(&self.spec, "take", "true").to_owned());
            }
            Behaviour::Loop => {
                let max = cfg_u64(&self.spec, "max_iterations", 10) as u32;
                let exit_at = cfg_u64(&self.spec, "exit_at", u64::from(max)) as u32;
                route = Route::Branch(
                    if ctx.iteration < exit_at {
                        "continue"
                    } else {
                        "done"
                    }
                    .into(),
                );
            }
            Behaviour::Panic => panic!("test node {} panicked", ctx.node_id()),
            Behaviour::Fail => {
                return Err(ctx.error(
                    class_of(cfg_str(&self.spec, "class", "tool")),
                    cfg_str(&self.spec, "message", "always fails"),
                ));
            }
            Behaviour::Stop => {
                route = Route::Stop {
                    error: self
                        .spec
                        .config_value("error")
                        .and_then(Value::as_str)
                        .map(String::from),
                };
            }
            Behaviour::Handler => {
                let failure = ctx.failure.clone().expect("handler runs with a failure");
                delta.variables.push((
                    "handled".into(),
                    VariableOp::Append(json!({
                        "node": failure.node_id, "class": failure.class, "retries": failure.retries
                    })),
                ));
                let retry_count = cfg_u64(&self.spec, "retry_count", 0) as u32;
                if failure.retries < retry_count {
                    route = Route::RetryFailed;
                } else if cfg_str(&self.spec, "fallback_action", "continue") == "stop" {
                    route = Route::Stop {
                        error: Some(format!("handler gave up on {}", failure.node_id)),
                    };
                }
            }
            Behaviour::Usage => {
                let tokens = cfg_u64(&self.spec, "tokens", 10);
                delta.usage = Some(Usage {
                    prompt_tokens: tokens,
                    completion_tokens: 0,
                    total_tokens: tokens,
                    cost: self
                        .spec
                        .config_value("cost")
                        .and_then(Value::as_f64)
                        .unwrap_or(0.0),
                });
            }
        }
        self.trace(&ctx, &mut delta);
        Ok(NodeOutput {
            delta,
            route,
            output: output.into(),
        })
    }
}

fn factory(behaviour: Behaviour) -> impl Fn(&NodeSpec) -> Result<Arc<dyn Node>> + Send + Sync {
    move |spec: &NodeSpec| {
        Ok(Arc::new(TestNode {
            spec: spec.clone(),
            behaviour,
            failures: AtomicU32::new(0),
        }) as Arc<dyn Node>)
    }
}

/// An engine builder with the test kinds registered: `start`, `end`, `noop`, `sleep`, `flaky`,
/// `emit`, `branch`, `loop`, `panic`, `fail`, `stop`, `error_handler`, `usage`.
///
/// These tests are about the scheduler; the validator's rules are tested by its own suite, so
/// the pre-run check is off here (graphs such as a cycle without an exit are run on purpose).
pub fn builder() -> EngineBuilder {
    Engine::builder()
        .validate_before_run(false)
        .register_node("start", factory(Behaviour::Noop))
        .register_node("end", factory(Behaviour::Noop))
        .register_node("noop", factory(Behaviour::Noop))
        .register_node("sleep", factory(Behaviour::Sleep))
        .register_node("flaky", factory(Behaviour::Flaky))
        .register_node("emit", factory(Behaviour::Emit))
        .register_node("branch", factory(Behaviour::Branch))
        .register_node("loop", factory(Behaviour::Loop))
        .register_node("panic", factory(Behaviour::Panic))
        .register_node("fail", factory(Behaviour::Fail))
        .register_node("stop", factory(Behaviour::Stop))
        .register_node("error_handler", factory(Behaviour::Handler))
        .register_node("usage", factory(Behaviour::Usage))
}

/// The engine with the test kinds and a fixed clock.
pub fn engine() -> Engine {
    builder()
        .clock(Arc::new(FixedClock::new(1_700_000_000_000)))
        .build()
}

/// A clock that stands still unless advanced.
#[derive(Debug)]
pub struct FixedClock(AtomicI64);

impl FixedClock {
    /// A clock at `ms`.
    pub fn new(ms: i64) -> FixedClock {
        FixedClock(AtomicI64::new(ms))
    }
}

impl Clock for FixedClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// `variables.trace` as strings.
pub fn trace(result: &ExecutionResult) -> Vec<String> {
    result
        .variables
        .get("trace")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// The event types in order.
pub fn event_types(result: &ExecutionResult) -> Vec<&'static str> {
    result.events.iter().map(|e| e.kind.type_name()).collect()
}

/// `(type, node_id)` of the node events, in order.
pub fn node_events(result: &ExecutionResult) -> Vec<String> {
    result
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::NodeStarted {
                node_id, iteration, ..
            } => Some(format!("start {node_id}#{iteration}")),
            EventKind::NodeCompleted {
                node_id, iteration, ..
            } => Some(format!("done {node_id}#{iteration}")),
            EventKind::NodeFailed { node_id, .. } => Some(format!("fail {node_id}")),
            EventKind::NodeSkipped { node_id } => Some(format!("skip {node_id}")),
            EventKind::NodeRetrying { node_id, .. } => Some(format!("retry {node_id}")),
            _ => None,
        })
        .collect()
}
