//! The `tool` node (aliases `tools`, `execute_tools`): runs the tool calls of the last assistant
//! message, with per-call timeouts, an allow-list, call limits and loop detection.
//!
//! **Config:**
//! - `allowed_tools` (list): when given, a call of another tool is refused.
//! - `max_total_calls` (≥1, default 10; old name `max_tool_calls`): most tool calls in the whole
//!   execution (the state's `tool_calls` count plus this node's calls).
//! - `max_calls_per_tool` (≥1, optional): most calls of any one tool in the execution.
//! - `max_consecutive_calls` (≥1, default 3): most calls of the same tool in a row (whatever
//!   the arguments), counting the execution's calls in order.
//! - `parallel_calls` (default true): run the calls of one message concurrently.
//! - `tool_timeout_ms` (1..=3 600 000, default 30 000): limit of each call.
//! - `repetition_detection` (`strict` | `adaptive` | `lenient` | `off`, default `adaptive`), on
//!   *identical* calls (same tool, same arguments — object key order does not matter):
//!   - `strict`: a call identical to any earlier call of the execution stops the loop;
//!   - `adaptive`: a call that would be the 3rd identical one stops it, and so does a call that
//!     closes a cycle — the last 2·p calls (this one included) being the same p calls twice,
//!     for a period p of 2, 3 or 4 (`a b a b`, `a b c a b c`, ...);
//!   - `lenient`: only a call that would be the 6th identical one stops it;
//!   - `off`: no detection.
//!
//! **The execution's earlier calls** are read from the messages: the tool calls of earlier
//! assistant messages, the last `tool_calls` of them (the state's count), so a thread's history
//! from earlier executions is not counted.
//!
//! **Each call**, in the order of the message: refused with an error result when the tool is
//! not allowed or not registered; otherwise run with a [`ToolContext`] carrying the node run's
//! idempotency key (`execution:node:iteration:attempt`) and the call id, under the timeout,
//! emitting `tool_call_started` / `tool_call_finished`. A failure or timeout becomes the call's
//! result text (`Error: ...`) so the model can react; it does not fail the node.
//!
//! **When a limit trips** (checked before anything runs, call by call), the calls before the
//! tripping one run, the others get the result `Not executed: ...`, a final assistant message
//! explains why the tools stopped, `metadata.tool_loop_stop_reason` records the reason (one of
//! `max_total_calls`, `max_calls_per_tool`, `max_consecutive_calls`, `repeated_call`,
//! `call_cycle`), and the node ends the execution as completed ([`Route::Stop`]) with that
//! message as the response.
//!
//! **Reads:** `messages`, `tool_calls`. **Writes:** `messages` (one tool result per call, in call
//! order, then the final message if a limit tripped), `tool_calls` (the calls attempted),
//! `metadata`, `response`. Output: `{calls: [{id, tool, ok, result}], stop_reason, stop_message}`.
//! A node whose last assistant message has no unanswered tool call does nothing.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::definition::NodeSpec;
use crate::engine::{Node, NodeContext, NodeFactory, NodeOutput, OutputValue, Route};
use crate::error::Result;
use crate::event::EventKind;
use crate::model::{Message, Role, ToolCall};
use crate::nodes::common::{Config, cancellable, value_text};
use crate::object::Keys;
use crate::state::StateDelta;
use crate::tool::{Tool, ToolContext};

/// How repeated identical calls are treated (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RepetitionDetection {
    /// Any repeat stops.
    Strict,
    /// The 3rd identical call, or a cycle of period 2..=4, stops.
    Adaptive,
    /// The 6th identical call stops.
    Lenient,
    /// No detection.
    Off,
}

impl RepetitionDetection {
    /// How many identical calls may run (`None`: any number).
    pub fn max_identical(self) -> Option<usize> {
        match self {
            RepetitionDetection::Strict => Some(1),
            RepetitionDetection::Adaptive => Some(2),
            RepetitionDetection::Lenient => Some(5),
            RepetitionDetection::Off => None,
        }
    }
}

/// Config of a `tool` node.
#[derive(Debug, Clone)]
pub struct ToolConfig {
    /// `allowed_tools`.
    pub allowed_tools: Option<Vec<String>>,
    /// `max_total_calls` / `max_tool_calls`.
    pub max_total_calls: u64,
    /// `max_calls_per_tool`.
    pub max_calls_per_tool: Option<u64>,
    /// `max_consecutive_calls`.
    pub max_consecutive_calls: u64,
    /// `parallel_calls`.
    pub parallel_calls: bool,
    /// `tool_timeout_ms`.
    pub tool_timeout_ms: u64,
    /// `repetition_detection`.
    pub repetition_detection: RepetitionDetection,
}

impl ToolConfig {
    /// Reads and checks the config of `spec`.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Config`] naming the node and key for a wrong type or range.
    pub fn from_spec(spec: &NodeSpec) -> Result<ToolConfig> {
        let c = Config::new(spec);
        Ok(ToolConfig {
            allowed_tools: c.string_list("allowed_tools")?,
            max_total_calls: c
                .integer_of(&["max_total_calls", "max_tool_calls"], 1, u64::MAX)?
                .unwrap_or(10),
            max_calls_per_tool: c.integer("max_calls_per_tool", 1, u64::MAX)?,
            max_consecutive_calls: c
                .integer("max_consecutive_calls", 1, u64::MAX)?
                .unwrap_or(3),
            parallel_calls: c.boolean("parallel_calls")?.unwrap_or(true),
            tool_timeout_ms: c
                .integer("tool_timeout_ms", 1, 3_600_000)?
                .unwrap_or(30_000),
            repetition_detection: match c.one_of(
                "repetition_detection",
                &["strict", "adaptive", "lenient", "off"],
            )? {
                Some("strict") => RepetitionDetection::Strict,
                Some("lenient") => RepetitionDetection::Lenient,
                Some("off") => RepetitionDetection::Off,
                _ => RepetitionDetection::Adaptive,
            },
        })
    }
}

/// Builds [`ToolNode`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct ToolFactory;

impl NodeFactory for ToolFactory {
    fn build(&self, spec: &NodeSpec) -> Result<Arc<dyn Node>> {
        Ok(Arc::new(ToolNode {
            config: ToolConfig::from_spec(spec)?,
        }))
    }
}

/// Runs tool calls.
#[derive(Debug, Clone)]
pub struct ToolNode {
    config: ToolConfig,
}

/// A call's identity for limits: tool name and arguments. Two keys are equal when their
/// arguments are equal as JSON values, whatever the order of their object keys (`serde_json`
/// compares objects by their entries), so nothing is copied or serialised to compare calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CallKey<'a> {
    name: &'a str,
    arguments: &'a Value,
}

impl<'a> CallKey<'a> {
    fn of(call: &'a ToolCall) -> CallKey<'a> {
        CallKey {
            name: &call.name,
            arguments: &call.arguments,
        }
    }
}

/// JSON text with object keys sorted, so that key order does not make calls differ.
fn canonical_json(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.clone(), sorted(v)))
                        .collect(),
                )
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

/// Why the tool loop stopped.
#[derive(Debug, Clone, PartialEq)]
struct Stop {
    reason: &'static str,
    message: String,
}

/// What happens to one call.
enum Plan {
    Run(Arc<dyn Tool>),
    Refuse(String),
    Skip,
}

impl ToolNode {
    /// The first limit the call `next` would trip, given the execution's calls so far (`seq`,
    /// oldest first) and the number of calls counted so far.
    fn check(&self, seq: &[CallKey<'_>], counted: u64, next: &CallKey<'_>) -> Option<Stop> {
        let c = &self.config;
        if counted >= c.max_total_calls {
            return Some(Stop {
                reason: "max_total_calls",
                message: format!(
                    "the limit of {} tool calls for this execution was reached",
                    c.max_total_calls
                ),
            });
        }
        if let Some(max) = c.max_calls_per_tool {
            let n = seq.iter().filter(|k| k.name == next.name).count() as u64;
            if n >= max {
                return Some(Stop {
                    reason: "max_calls_per_tool",
                    message: format!(
                        "the tool `{}` was already called {n} times (limit {max} per tool)",
                        next.name
                    ),
                });
            }
        }
        let run = seq.iter().rev().take_while(|k| k.name == next.name).count() as u64;
        if run >= c.max_consecutive_calls {
            return Some(Stop {
                reason: "max_consecutive_calls",
                message: format!(
                    "the tool `{}` was called {run} times in a row (limit {})",
                    next.name, c.max_consecutive_calls
                ),
            });
        }
        let mode = c.repetition_detection;
        if let Some(max) = mode.max_identical() {
            let n = seq.iter().filter(|k| *k == next).count();
            if n >= max {
                return Some(Stop {
                    reason: "repeated_call",
                    message: format!(
                        "the same call `{}({})` was already made {} ({} detection)",
                        next.name,
                        canonical_json(next.arguments),
                        if n == 1 {
                            "once".to_owned()
                        } else {
                            format!("{n} times")
                        },
                        match mode {
                            RepetitionDetection::Strict => "strict",
                            RepetitionDetection::Lenient => "lenient",
                            _ => "adaptive",
                        }
                    ),
                });
            }
        }
        if mode == RepetitionDetection::Adaptive {
            for period in 2..=4usize {
                let len = seq.len() + 1;
                if len < 2 * period {
                    break;
                }
                let at = |i: usize| if i == seq.len() { next } else { &seq[i] };
                if (len - period..len).all(|i| at(i) == at(i - period)) {
                    return Some(Stop {
                        reason: "call_cycle",
                        message: format!(
                            "the last {} tool calls repeat the same {period} calls twice",
                            2 * period
                        ),
                    });
                }
            }
        }
        None
    }

    async fn run_call(&self, ctx: &NodeContext, tool: &dyn Tool, call: &ToolCall) -> (bool, Value) {
        // Its events are built only when the run keeps them.
        let started = ctx.keeps_events().then(|| {
            Self::call_started(ctx, call);
            Instant::now()
        });
        let tool_ctx = ToolContext {
            idempotency_key: ctx.idempotency_key(),
            execution_id: ctx.execution_id.to_string(),
            node_id: ctx.node_id().to_owned(),
            iteration: ctx.iteration,
            attempt: ctx.attempt,
            call_id: call.id.clone(),
            cancel: ctx.cancel.child_token(),
        };
        let limit = self.config.tool_timeout_ms;
        // Most calls (a Python function) finish on their first poll, which needs no timer (a
        // clock read and a handle on the runtime's timer); a call that waits runs under its
        // timeout from then on.
        let mut running = std::pin::pin!(tool.call_borrowed(&call.arguments, &tool_ctx));
        let result = match futures::poll!(running.as_mut()) {
            std::task::Poll::Ready(result) => Ok(result),
            std::task::Poll::Pending => {
                tokio::time::timeout(Duration::from_millis(limit), running).await
            }
        };
        let (ok, value) = match result {
            Ok(Ok(value)) => (true, value),
            Ok(Err(e)) => (false, Value::String(format!("Error: {e}"))),
            Err(_) => {
                tool_ctx.cancel.cancel();
                (
                    false,
                    Value::String(format!(
                        "Error: tool `{}` timed out after {limit} ms",
                        call.name
                    )),
                )
            }
        };
        if let Some(started) = started {
            let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            Self::call_finished(ctx, call, ok, &value, duration_ms);
        }
        (ok, value)
    }

    fn refuse(ctx: &NodeContext, call: &ToolCall, message: &str) -> (bool, Value) {
        let value = Value::String(format!("Error: {message}"));
        if ctx.keeps_events() {
            Self::call_started(ctx, call);
            Self::call_finished(ctx, call, false, &value, 0);
        }
        (false, value)
    }

    /// Emits `tool_call_started` for `call`.
    fn call_started(ctx: &NodeContext, call: &ToolCall) {
        ctx.emit(EventKind::ToolCallStarted {
            node_id: ctx.node_id().to_owned(),
            call_id: call.id.clone(),
            tool: call.name.clone(),
            arguments: call.arguments.clone(),
        });
    }

    /// Emits `tool_call_finished` for `call`.
    fn call_finished(
        ctx: &NodeContext,
        call: &ToolCall,
        ok: bool,
        result: &Value,
        duration_ms: u64,
    ) {
        ctx.emit(EventKind::ToolCallFinished {
            node_id: ctx.node_id().to_owned(),
            call_id: call.id.clone(),
            tool: call.name.clone(),
            ok,
            result: result.clone(),
            duration_ms,
        });
    }
}

#[async_trait]
impl Node for ToolNode {
    /// It calls the outside world (models, tools, HTTP endpoints): a durable execution records
    /// its intent first.
    fn side_effects(&self) -> bool {
        true
    }

    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput> {
        let messages = ctx.state.messages();
        let Some(at) = messages.iter().rposition(|m| m.role == Role::Assistant) else {
            return Ok(nothing_to_do());
        };
        let answered: Vec<&str> = messages[at + 1..]
            .iter()
            .filter_map(|m| m.tool_call_id.as_deref())
            .collect();
        let calls: Vec<&ToolCall> = messages[at]
            .tool_calls
            .iter()
            .filter(|c| !answered.contains(&c.id.as_str()))
            .collect();
        if calls.is_empty() {
            return Ok(nothing_to_do());
        }

        // The execution's calls so far, oldest first: those of earlier assistant messages, then
        // those of this message already answered.
        let earlier: Vec<CallKey<'_>> = messages[..at]
            .iter()
            .filter(|m| m.role == Role::Assistant)
            .flat_map(|m| m.tool_calls.iter())
            .chain(
                messages[at]
                    .tool_calls
                    .iter()
                    .filter(|c| answered.contains(&c.id.as_str())),
            )
            .map(CallKey::of)
            .collect();
        let counted = ctx.state.tool_calls();
        let skip = earlier
            .len()
            .saturating_sub(usize::try_from(counted).unwrap_or(usize::MAX));
        let mut seq: Vec<CallKey<'_>> = earlier[skip..].to_vec();

        // Plan every call before running any.
        let mut stop: Option<Stop> = None;
        let mut plans = Vec::with_capacity(calls.len());
        let mut attempted = 0u64;
        for call in &calls {
            if stop.is_some() {
                plans.push(Plan::Skip);
                continue;
            }
            let key = CallKey::of(call);
            if let Some(s) = self.check(&seq, counted + attempted, &key) {
                stop = Some(s);
                plans.push(Plan::Skip);
                continue;
            }
            attempted += 1;
            seq.push(key);
            let allowed = self
                .config
                .allowed_tools
                .as_ref()
                .is_none_or(|a| a.contains(&call.name));
            plans.push(if !allowed {
                Plan::Refuse(format!("the tool `{}` is not allowed here", call.name))
            } else {
                match ctx.services.tools.get(&call.name) {
                    Ok(tool) => Plan::Run(tool),
                    Err(_) => Plan::Refuse(format!("unknown tool `{}`", call.name)),
                }
            });
        }

        let node_ctx = &ctx;
        // The calls and plans outlive every call's future: borrowed, not copied.
        let runs = calls.iter().zip(&plans).map(|(&call, plan)| async move {
            match plan {
                Plan::Run(tool) => Some(self.run_call(node_ctx, tool.as_ref(), call).await),
                Plan::Refuse(message) => Some(ToolNode::refuse(node_ctx, call, message)),
                Plan::Skip => None,
            }
        });
        let results: Vec<Option<(bool, Value)>> = cancellable(&ctx, async {
            // One call (the usual agent step) needs nothing to join.
            if self.config.parallel_calls && calls.len() > 1 {
                Ok(join_all(runs).await)
            } else {
                let mut out = Vec::with_capacity(calls.len());
                for run in runs {
                    out.push(run.await);
                }
                Ok(out)
            }
        })
        .await?;

        let mut delta = StateDelta {
            messages: Vec::with_capacity(calls.len() + 1),
            tool_calls: attempted,
            ..StateDelta::default()
        };
        let mut summary = Vec::with_capacity(calls.len());
        for (call, result) in calls.iter().zip(results) {
            let (ok, text, result) = match result {
                Some((ok, value)) => (ok, value_text(&value), value),
                None => {
                    let why = stop.as_ref().map_or("", |s| s.message.as_str());
                    let text = format!("Not executed: the tool loop was stopped ({why}).");
                    (false, text.clone(), Value::String(text))
                }
            };
            delta.messages.push(Message::tool_result(
                call.id.clone(),
                call.name.clone(),
                text,
            ));
            summary.push((call.id.clone(), call.name.clone(), ok, result));
        }
        let mut route = Route::Edges;
        if let Some(s) = &stop {
            let text = format!("I stopped calling tools: {}.", s.message);
            delta.messages.push(Message::assistant(text.clone()));
            delta
                .metadata
                .insert("tool_loop_stop_reason".into(), json!(s.reason));
            delta.response = Some(text);
            route = Route::Stop { error: None };
        }
        // Made when read: most runs never read it (see `OutputValue`).
        let output = OutputValue::lazy(move || {
            let calls = summary.iter().map(|(id, tool, ok, result)| {
                CALL.object([
                    Value::String(id.clone()),
                    Value::String(tool.clone()),
                    Value::Bool(*ok),
                    result.clone(),
                ])
            });
            OUTPUT.object([
                Value::Array(calls.collect()),
                stop.as_ref().map_or(Value::Null, |s| Value::from(s.reason)),
                stop.as_ref()
                    .map_or(Value::Null, |s| Value::String(s.message.clone())),
            ])
        });
        Ok(NodeOutput {
            delta,
            route,
            output,
        })
    }
}

/// The node's output: `calls` (each `id`, `tool`, `ok`, `result`), `stop_reason` and
/// `stop_message`.
static OUTPUT: Keys<3> = Keys::new(["calls", "stop_reason", "stop_message"]);
/// A call of the node's output.
static CALL: Keys<4> = Keys::new(["id", "tool", "ok", "result"]);

fn nothing_to_do() -> NodeOutput {
    NodeOutput {
        output: OUTPUT.object([json!([]), Value::Null, Value::Null]).into(),
        ..NodeOutput::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Services;
    use crate::nodes::testing::*;
    use crate::state::State;

    /// A state whose history holds `earlier` executed calls (one assistant message each, answered,
    /// counted in `tool_calls`), then an assistant message asking for `batch`.
    fn state_with(earlier: &[(&str, Value)], batch: Vec<ToolCall>) -> State {
        let mut state = State::new(json!({"message": "go"}), vec![]);
        let mut messages = Vec::new();
        for (i, (name, args)) in earlier.iter().enumerate() {
            let id = format!("old{i}");
            messages.push(Message {
                tool_calls: vec![call(&id, name, args.clone())],
                ..Message::assistant("")
            });
            messages.push(Message::tool_result(id, *name, "done"));
        }
        messages.push(Message {
            tool_calls: batch,
            ..Message::assistant("")
        });
        state.apply(&StateDelta {
            messages,
            tool_calls: earlier.len() as u64,
            ..StateDelta::default()
        });
        state
    }

    fn services(tools: Vec<Arc<TestTool>>) -> Services {
        let mut services = Services::default();
        for t in tools {
            services.tools.register(t);
        }
        services
    }

    async fn run(config: Value, state: State, services: Services) -> (NodeOutput, Vec<EventKind>) {
        let s = spec("tools", "execute_tools", config);
        let node = build(&ToolFactory, &s);
        let (ctx, events) = context(s, state, services);
        let out = node.run(ctx).await.unwrap();
        (out, events.take())
    }

    fn contents(out: &NodeOutput) -> Vec<String> {
        out.delta
            .messages
            .iter()
            .map(|m| m.content.clone())
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn runs_calls_in_parallel_and_appends_results_in_call_order() {
        let slow = TestTool::new("slow", Behaviour::Sleep(Duration::from_millis(300)));
        let fast = TestTool::new("fast", Behaviour::Sleep(Duration::from_millis(100)));
        let state = state_with(
            &[],
            vec![
                call("c1", "slow", json!({"n": 1})),
                call("c2", "fast", json!({"n": 2})),
            ],
        );
        let start = Instant::now();
        let (out, events) = run(
            json!({}),
            state.clone(),
            services(vec![slow.clone(), fast.clone()]),
        )
        .await;
        assert_eq!(start.elapsed().as_millis(), 300);
        assert_eq!(out.route, Route::Edges);
        assert_eq!(out.delta.tool_calls, 2);
        assert_eq!(
            out.delta.messages,
            vec![
                Message::tool_result("c1", "slow", r#"{"tool":"slow","args":{"n":1}}"#),
                Message::tool_result("c2", "fast", r#"{"tool":"fast","args":{"n":2}}"#),
            ]
        );
        assert!(out.delta.metadata.is_empty());
        // The whole output, keys in order.
        assert_eq!(
            out.output.to_string(),
            json!({
                "calls": [
                    {"id": "c1", "tool": "slow", "ok": true, "result": {"tool": "slow", "args": {"n": 1}}},
                    {"id": "c2", "tool": "fast", "ok": true, "result": {"tool": "fast", "args": {"n": 2}}},
                ],
                "stop_reason": null,
                "stop_message": null,
            })
            .to_string()
        );
        // Both started before either finished; fast finished first.
        let order: Vec<String> = events
            .iter()
            .map(|e| match e {
                EventKind::ToolCallStarted { call_id, .. } => format!("start {call_id}"),
                EventKind::ToolCallFinished {
                    call_id,
                    ok,
                    duration_ms,
                    ..
                } => format!("end {call_id} {ok} {duration_ms}"),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            order,
            ["start c1", "start c2", "end c2 true 100", "end c1 true 300"]
        );
        assert_eq!(
            events[0],
            EventKind::ToolCallStarted {
                node_id: "tools".into(),
                call_id: "c1".into(),
                tool: "slow".into(),
                arguments: json!({"n": 1}),
            }
        );
        // The tool context carries the idempotency key and the call id.
        let (_, tctx) = slow.calls.lock().unwrap()[0].clone();
        assert_eq!(tctx.idempotency_key, "exec1:tools:0:1");
        assert_eq!(tctx.call_id, "c1");
        assert_eq!(
            (
                tctx.execution_id.as_str(),
                tctx.node_id.as_str(),
                tctx.iteration,
                tctx.attempt
            ),
            ("exec1", "tools", 0, 1)
        );

        // Sequential: one after the other.
        let start = Instant::now();
        let (out, _) = run(
            json!({"parallel_calls": false}),
            state,
            services(vec![slow, fast]),
        )
        .await;
        assert_eq!(start.elapsed().as_millis(), 400);
        assert_eq!(out.delta.messages[0].tool_call_id.as_deref(), Some("c1"));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_timeouts_and_refusals_become_results() {
        let tools = vec![
            TestTool::new("flaky", Behaviour::Fail("disk full".into())),
            TestTool::new("sleepy", Behaviour::Sleep(Duration::from_secs(10))),
            TestTool::new("shell", Behaviour::Echo),
            TestTool::new("calc", Behaviour::Value(json!(42))),
        ];
        let state = state_with(
            &[],
            vec![
                call("a", "flaky", json!({})),
                call("b", "sleepy", json!({})),
                call("c", "shell", json!({"cmd": "rm"})),
                call("d", "ghost", json!({})),
                call("e", "calc", json!({"x": "6*7"})),
            ],
        );
        let config = json!({"allowed_tools": ["flaky", "sleepy", "calc", "ghost"], "tool_timeout_ms": 500, "max_consecutive_calls": 10});
        let (out, events) = run(config, state, services(tools)).await;
        assert_eq!(
            contents(&out),
            [
                "Error: tool `flaky` failed (tool): disk full",
                "Error: tool `sleepy` timed out after 500 ms",
                "Error: the tool `shell` is not allowed here",
                "Error: unknown tool `ghost`",
                "42",
            ]
        );
        assert_eq!(out.delta.tool_calls, 5);
        assert_eq!(out.route, Route::Edges);
        let finished: Vec<(String, bool)> = events
            .iter()
            .filter_map(|e| match e {
                EventKind::ToolCallFinished { call_id, ok, .. } => Some((call_id.clone(), *ok)),
                _ => None,
            })
            .collect();
        assert_eq!(finished.len(), 5);
        assert_eq!(finished.iter().filter(|(_, ok)| *ok).count(), 1);
    }

    #[tokio::test]
    async fn max_total_calls_stops_with_a_final_message() {
        let echo = TestTool::new("search", Behaviour::Echo);
        let earlier: Vec<(&str, Value)> = (0..9).map(|i| ("search", json!({"q": i}))).collect();
        let state = state_with(
            &earlier,
            vec![
                call("c1", "search", json!({"q": "a"})),
                call("c2", "search", json!({"q": "b"})),
            ],
        );
        let config = json!({"max_tool_calls": 10, "max_consecutive_calls": 100, "repetition_detection": "off"});
        let (out, _) = run(config, state, services(vec![echo.clone()])).await;
        assert_eq!(echo.calls.lock().unwrap().len(), 1);
        let final_text =
            "I stopped calling tools: the limit of 10 tool calls for this execution was reached.";
        assert_eq!(
            contents(&out),
            [
                r#"{"tool":"search","args":{"q":"a"}}"#,
                "Not executed: the tool loop was stopped (the limit of 10 tool calls for this execution was reached).",
                final_text,
            ]
        );
        assert_eq!(out.delta.messages[2].role, Role::Assistant);
        assert_eq!(out.delta.tool_calls, 1);
        assert_eq!(
            out.delta.metadata.get("tool_loop_stop_reason"),
            Some(&json!("max_total_calls"))
        );
        assert_eq!(out.delta.response.as_deref(), Some(final_text));
        assert_eq!(out.route, Route::Stop { error: None });
        assert_eq!(out.output["stop_reason"], "max_total_calls");
        assert_eq!(
            out.output["stop_message"],
            "the limit of 10 tool calls for this execution was reached"
        );
    }

    #[tokio::test]
    async fn per_tool_and_consecutive_limits() {
        let tools = || {
            services(vec![
                TestTool::new("a", Behaviour::Echo),
                TestTool::new("b", Behaviour::Echo),
            ])
        };
        // a, b, a already; another `a` is the third call of `a`.
        let earlier = [("a", json!(1)), ("b", json!(2)), ("a", json!(3))];
        let state = state_with(&earlier, vec![call("c", "a", json!(4))]);
        let (out, _) = run(
            json!({"max_calls_per_tool": 2, "repetition_detection": "off"}),
            state.clone(),
            tools(),
        )
        .await;
        assert_eq!(out.output["stop_reason"], "max_calls_per_tool");
        assert_eq!(
            out.output["stop_message"],
            "the tool `a` was already called 2 times (limit 2 per tool)"
        );
        let (out, _) = run(
            json!({"max_calls_per_tool": 3, "repetition_detection": "off"}),
            state,
            tools(),
        )
        .await;
        assert_eq!(out.output["stop_reason"], Value::Null);

        // Three `b` in a row, the fourth trips the default limit of 3; the batch counts too.
        let earlier = [("a", json!(0)), ("b", json!(1)), ("b", json!(2))];
        let state = state_with(
            &earlier,
            vec![call("x", "b", json!(3)), call("y", "b", json!(4))],
        );
        let (out, _) = run(json!({"repetition_detection": "off"}), state, tools()).await;
        assert_eq!(out.output["stop_reason"], "max_consecutive_calls");
        assert_eq!(
            out.output["stop_message"],
            "the tool `b` was called 3 times in a row (limit 3)"
        );
        assert_eq!(out.delta.tool_calls, 1);
        assert_eq!(out.output["calls"][0]["ok"], true);
        assert_eq!(out.output["calls"][1]["ok"], false);
    }

    async fn stop_reason(mode: &str, earlier: &[(&str, Value)], next: (&str, Value)) -> Value {
        let tools = services(vec![
            TestTool::new("a", Behaviour::Echo),
            TestTool::new("b", Behaviour::Echo),
            TestTool::new("c", Behaviour::Echo),
        ]);
        let state = state_with(earlier, vec![call("n", next.0, next.1)]);
        let config = json!({"repetition_detection": mode, "max_consecutive_calls": 100, "max_total_calls": 100});
        run(config, state, tools).await.0.output["stop_reason"].clone()
    }

    #[tokio::test]
    async fn repetition_detection_modes() {
        let q = |v: &str| json!({"q": v, "lang": "en"});
        // Key order does not make calls differ.
        let same_reordered = json!({"lang": "en", "q": "x"});
        let once = [("a", q("x"))];
        let twice = [("a", q("x")), ("a", q("x"))];
        let five: Vec<(&str, Value)> = (0..5).map(|_| ("a", q("x"))).collect();
        let four: Vec<(&str, Value)> = (0..4).map(|_| ("a", q("x"))).collect();

        assert_eq!(
            stop_reason("strict", &once, ("a", same_reordered.clone())).await,
            "repeated_call"
        );
        assert_eq!(
            stop_reason("strict", &once, ("a", q("y"))).await,
            Value::Null
        );
        assert_eq!(
            stop_reason("adaptive", &once, ("a", same_reordered)).await,
            Value::Null
        );
        assert_eq!(
            stop_reason("adaptive", &twice, ("a", q("x"))).await,
            "repeated_call"
        );
        assert_eq!(
            stop_reason("lenient", &four, ("a", q("x"))).await,
            Value::Null
        );
        assert_eq!(
            stop_reason("lenient", &five, ("a", q("x"))).await,
            "repeated_call"
        );
        assert_eq!(stop_reason("off", &five, ("a", q("x"))).await, Value::Null);

        // Cycles: a b a b, a b c a b c.
        let abab = [("a", q("1")), ("b", q("2")), ("a", q("1"))];
        assert_eq!(
            stop_reason("adaptive", &abab, ("b", q("2"))).await,
            "call_cycle"
        );
        assert_eq!(
            stop_reason("adaptive", &abab, ("b", q("3"))).await,
            Value::Null
        );
        assert_eq!(
            stop_reason("lenient", &abab, ("b", q("2"))).await,
            Value::Null
        );
        let abcabc = [
            ("a", q("1")),
            ("b", q("2")),
            ("c", q("3")),
            ("a", q("1")),
            ("b", q("2")),
        ];
        assert_eq!(
            stop_reason("adaptive", &abcabc, ("c", q("3"))).await,
            "call_cycle"
        );
    }

    #[tokio::test]
    async fn repetition_message_is_clear() {
        let tools = services(vec![TestTool::new("a", Behaviour::Echo)]);
        let state = state_with(
            &[("a", json!({"q": 1}))],
            vec![call("n", "a", json!({"q": 1}))],
        );
        let (out, _) = run(json!({"repetition_detection": "strict"}), state, tools).await;
        assert_eq!(
            out.delta.messages.last().unwrap().content,
            "I stopped calling tools: the same call `a({\"q\":1})` was already made once (strict detection)."
        );
    }

    #[tokio::test]
    async fn thread_history_beyond_this_execution_is_not_counted() {
        // Three identical earlier calls in the messages, but only one of them in this execution.
        let mut state = state_with(
            &[("a", json!(1)), ("a", json!(1)), ("a", json!(1))],
            vec![call("n", "a", json!(1))],
        );
        let mut fresh = State::new(json!({}), state.messages().to_vec());
        fresh.apply(&StateDelta {
            tool_calls: 1,
            ..StateDelta::default()
        });
        state = fresh;
        let (out, _) = run(
            json!({}),
            state,
            services(vec![TestTool::new("a", Behaviour::Echo)]),
        )
        .await;
        assert_eq!(out.output["stop_reason"], Value::Null);
        assert_eq!(out.delta.tool_calls, 1);
    }

    #[tokio::test]
    async fn nothing_to_do_without_unanswered_calls() {
        let tools = || services(vec![TestTool::new("a", Behaviour::Echo)]);
        let (out, events) = run(
            json!({}),
            State::new(json!({"message": "hi"}), vec![]),
            tools(),
        )
        .await;
        assert!(out.delta.is_empty());
        assert!(events.is_empty());
        let state = state_with(&[("a", json!(1))], vec![]);
        let (out, _) = run(json!({}), state, tools()).await;
        assert!(out.delta.is_empty());
        // Calls already answered are not run again.
        let mut state = state_with(
            &[],
            vec![call("c1", "a", json!(1)), call("c2", "a", json!(2))],
        );
        state.apply(&StateDelta {
            messages: vec![Message::tool_result("c1", "a", "done")],
            ..StateDelta::default()
        });
        let (out, _) = run(json!({}), state.clone(), tools()).await;
        assert_eq!(out.delta.messages.len(), 1);
        assert_eq!(out.delta.messages[0].tool_call_id.as_deref(), Some("c2"));
        // The answered call counts as an earlier call of the execution.
        let mut state = state_with(
            &[],
            vec![call("c1", "a", json!(1)), call("c2", "a", json!(1))],
        );
        state.apply(&StateDelta {
            messages: vec![Message::tool_result("c1", "a", "done")],
            tool_calls: 1,
            ..StateDelta::default()
        });
        let (out, _) = run(json!({"repetition_detection": "strict"}), state, tools()).await;
        assert_eq!(out.output["stop_reason"], "repeated_call");
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_stops_running_calls() {
        let s = spec("tools", "tool", json!({}));
        let node = build(&ToolFactory, &s);
        let state = state_with(&[], vec![call("c1", "slow", json!({}))]);
        let (ctx, _) = context(
            s,
            state,
            services(vec![TestTool::new(
                "slow",
                Behaviour::Sleep(Duration::from_secs(20)),
            )]),
        );
        let cancel = ctx.cancel.clone();
        let task = tokio::spawn(async move { node.run(ctx).await });
        tokio::time::sleep(Duration::from_millis(5)).await;
        cancel.cancel();
        let err = task.await.unwrap().unwrap_err();
        assert_eq!(err.to_string(), "cancelled: node `tools` was cancelled");
    }

    #[test]
    fn bad_configs_are_refused() {
        let cases = [
            (
                json!({"max_total_calls": 0}),
                "config `max_total_calls` must be at least 1, found 0",
            ),
            (
                json!({"repetition_detection": "paranoid"}),
                "config `repetition_detection` must be one of strict, adaptive, lenient, off, found \"paranoid\"",
            ),
            (
                json!({"tool_timeout_ms": 0}),
                "config `tool_timeout_ms` must be between 1 and 3600000, found 0",
            ),
            (
                json!({"allowed_tools": "search"}),
                "config `allowed_tools` must be a list of strings, found a string",
            ),
        ];
        for (config, message) in cases {
            let err = ToolFactory
                .build(&spec("tools", "tool", config))
                .err()
                .unwrap();
            assert_eq!(
                err.to_string(),
                format!("configuration error: node `tools`: {message}")
            );
        }
    }
}
