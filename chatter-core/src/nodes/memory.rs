//! The `memory` node: keeps a window of recent messages and summarises the older ones.
//!
//! **Config:**
//! - `window_size` (1..=10 000, default 10; old name `memory_window`): messages kept.
//! - `keep_system` (default true): system messages are kept, outside the window (the window
//!   then counts only the other messages).
//! - `summarize` (default true; old name `summarize_older`): summarise what is dropped with a
//!   model; when false the older messages are just dropped.
//! - `summary_provider`, `summary_model`: the model (default: the registry's default provider
//!   and its default model).
//! - `summary_prompt` (template): the instruction given to the summarising model (a sensible
//!   default otherwise).
//!
//! **Semantics.** The window is the last `window_size` messages (of the non-system ones when
//! `keep_system`); it grows backwards when needed so that tool results are never separated from
//! the assistant message that asked for them. Everything older is REALLY removed from `messages`
//! (the delta replaces the list). When summarising, the dropped messages (and any earlier
//! summary) are summarised into ONE system message, `Summary of the earlier conversation: ...`,
//! placed just before the window; an earlier summary is replaced, never stacked. When nothing
//! falls outside the window, nothing changes and no model is called.
//!
//! **Reads:** `messages`. **Writes:** `messages` (replaced), `usage` (the summary call).
//! Output: `{dropped, kept, summarized}`.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;

use crate::definition::NodeSpec;
use crate::engine::{Node, NodeContext, NodeFactory, NodeOutput};
use crate::error::Result;
use crate::expr::PromptTemplate;
use crate::model::{ChatRequest, Message, Role};
use crate::nodes::common::{Config, call_model, check_budget};
use crate::state::StateDelta;

/// The start of the system message holding the summary.
pub const SUMMARY_PREFIX: &str = "Summary of the earlier conversation: ";

/// The instruction given to the summarising model when `summary_prompt` is not set.
pub const DEFAULT_SUMMARY_PROMPT: &str = "Summarise the conversation below in a few sentences. \
Keep names, facts, decisions and open questions; leave out small talk. Answer with the summary only.";

/// Config of a `memory` node.
#[derive(Debug, Clone)]
pub struct MemoryConfig {
    /// `window_size` / `memory_window`.
    pub window_size: usize,
    /// `keep_system`.
    pub keep_system: bool,
    /// `summarize` / `summarize_older`.
    pub summarize: bool,
    /// `summary_provider`.
    pub summary_provider: Option<String>,
    /// `summary_model`.
    pub summary_model: Option<String>,
    /// `summary_prompt`.
    pub summary_prompt: Option<PromptTemplate>,
}

impl MemoryConfig {
    /// Reads and checks the config of `spec`.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Config`] naming the node and key for a wrong type or range.
    pub fn from_spec(spec: &NodeSpec) -> Result<MemoryConfig> {
        let c = Config::new(spec);
        let summarize = match c.boolean("summarize")? {
            Some(b) => b,
            None => c.boolean("summarize_older")?.unwrap_or(true),
        };
        Ok(MemoryConfig {
            window_size: c
                .integer_of(&["window_size", "memory_window"], 1, 10_000)?
                .unwrap_or(10) as usize,
            keep_system: c.boolean("keep_system")?.unwrap_or(true),
            summarize,
            summary_provider: c.name("summary_provider")?,
            summary_model: c.name("summary_model")?,
            summary_prompt: c.template("summary_prompt")?,
        })
    }
}

/// Builds [`MemoryNode`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryFactory;

impl NodeFactory for MemoryFactory {
    fn build(&self, spec: &NodeSpec) -> Result<Arc<dyn Node>> {
        Ok(Arc::new(MemoryNode {
            config: MemoryConfig::from_spec(spec)?,
        }))
    }
}

/// Trims the conversation.
#[derive(Debug, Clone)]
pub struct MemoryNode {
    config: MemoryConfig,
}

fn is_summary(m: &Message) -> bool {
    m.role == Role::System && m.content.starts_with(SUMMARY_PREFIX)
}

/// The transcript a summarising model reads.
fn transcript(messages: &[&Message]) -> String {
    let mut out = String::new();
    for m in messages {
        if is_summary(m) {
            out.push_str("earlier summary: ");
            out.push_str(&m.content[SUMMARY_PREFIX.len()..]);
            out.push('\n');
            continue;
        }
        if !m.content.is_empty() {
            out.push_str(m.role.as_str());
            if let Some(name) = &m.name {
                out.push_str(&format!(" ({name})"));
            }
            out.push_str(": ");
            out.push_str(&m.content);
            out.push('\n');
        }
        for call in &m.tool_calls {
            out.push_str(&format!(
                "{} called {}({})\n",
                m.role.as_str(),
                call.name,
                call.arguments
            ));
        }
    }
    out
}

#[async_trait]
impl Node for MemoryNode {
    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput> {
        let config = &self.config;
        let messages = ctx.state.messages();
        let in_window = |m: &Message| !(config.keep_system && m.role == Role::System);
        // Positions of the messages the window counts, oldest first.
        let counted: Vec<usize> = (0..messages.len())
            .filter(|&i| in_window(&messages[i]))
            .collect();
        if counted.len() <= config.window_size {
            return Ok(unchanged(messages.len()));
        }
        let mut first = counted.len() - config.window_size;
        while first > 0 && messages[counted[first]].role == Role::Tool {
            first -= 1;
        }
        if first == 0 {
            return Ok(unchanged(messages.len()));
        }
        let boundary = counted[first];
        let kept = |i: usize| i >= boundary || !in_window(&messages[i]);
        let dropped: Vec<&Message> = (0..boundary)
            .filter(|&i| !kept(i))
            .map(|i| &messages[i])
            .collect();

        let mut delta = StateDelta::default();
        let summary = if config.summarize {
            check_budget(&ctx)?;
            let mut source: Vec<&Message> = messages
                .iter()
                .enumerate()
                .filter(|(i, m)| is_summary(m) && kept(*i))
                .map(|(_, m)| m)
                .collect();
            source.extend(dropped.iter().copied());
            let instruction = match &config.summary_prompt {
                Some(t) => t.render(&ctx.expr_context_for(t.state_reads()))?,
                None => DEFAULT_SUMMARY_PROMPT.to_owned(),
            };
            let request = ChatRequest {
                model: config.summary_model.clone(),
                messages: Arc::new(vec![
                    Message::system(instruction),
                    Message::user(transcript(&source)),
                ]),
                idempotency_key: Some(ctx.idempotency_key()),
                ..ChatRequest::default()
            };
            let model = ctx
                .services
                .models
                .get(config.summary_provider.as_deref())?;
            let response = call_model(&ctx, model.as_ref(), request, false)
                .await?
                .response;
            delta.usage = Some(response.usage);
            Some(Message::system(format!(
                "{SUMMARY_PREFIX}{}",
                response.message.content.trim()
            )))
        } else {
            None
        };

        let mut result = Vec::with_capacity(messages.len() - dropped.len() + 1);
        for (i, m) in messages.iter().enumerate() {
            if i == boundary
                && let Some(s) = &summary
            {
                result.push(s.clone());
            }
            if kept(i) && !(summary.is_some() && is_summary(m)) {
                result.push(m.clone());
            }
        }
        let output = json!({
            "dropped": dropped.len(),
            "kept": result.len(),
            "summarized": summary.is_some(),
        });
        delta.replace_messages = Some(result);
        Ok(NodeOutput {
            delta,
            output: output.into(),
            ..NodeOutput::default()
        })
    }
}

fn unchanged(kept: usize) -> NodeOutput {
    NodeOutput {
        output: json!({"dropped": 0, "kept": kept, "summarized": false}).into(),
        ..NodeOutput::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodes::testing::*;
    use crate::state::State;
    use serde_json::Value;

    fn conversation(turns: usize) -> Vec<Message> {
        let mut messages = vec![Message::system("Be brief.")];
        for i in 1..=turns {
            messages.push(Message::user(format!("q{i}")));
            messages.push(Message::assistant(format!("a{i}")));
        }
        messages
    }

    async fn run(config: Value, messages: Vec<Message>, model: Arc<CannedModel>) -> NodeOutput {
        let s = spec("mem", "memory", config);
        let node = build(&MemoryFactory, &s);
        let state = State::new(json!({}), messages);
        node.run(context(s, state, services_with_model(model)).0)
            .await
            .unwrap()
    }

    fn applied(messages: Vec<Message>, out: &NodeOutput) -> Vec<Message> {
        let mut state = State::new(json!({}), messages);
        state.apply(&out.delta);
        state.messages().to_vec()
    }

    #[tokio::test]
    async fn summarises_and_really_drops_older_messages() {
        let model = CannedModel::new(vec![reply("  User asked q1 and q2.  ", vec![])]);
        let messages = conversation(3);
        let out = run(
            json!({"window_size": 2, "summary_model": "small"}),
            messages.clone(),
            model.clone(),
        )
        .await;
        let after = applied(messages, &out);
        assert_eq!(
            after,
            vec![
                Message::system("Be brief."),
                Message::system("Summary of the earlier conversation: User asked q1 and q2."),
                Message::user("q3"),
                Message::assistant("a3"),
            ]
        );
        assert_eq!(out.delta.usage, Some(usage(10, 5)));
        assert_eq!(
            out.output,
            json!({"dropped": 4, "kept": 4, "summarized": true})
        );
        let request = &model.requests()[0];
        assert_eq!(request.model.as_deref(), Some("small"));
        assert_eq!(request.messages[0], Message::system(DEFAULT_SUMMARY_PROMPT));
        assert_eq!(
            request.messages[1],
            Message::user("user: q1\nassistant: a1\nuser: q2\nassistant: a2\n")
        );
        assert_eq!(request.idempotency_key.as_deref(), Some("exec1:mem:0:1"));
    }

    #[tokio::test]
    async fn an_earlier_summary_is_folded_into_the_new_one() {
        let model = CannedModel::new(vec![reply("Everything so far.", vec![])]);
        let mut messages = vec![
            Message::system("Be brief."),
            Message::system(format!("{SUMMARY_PREFIX}Old stuff.")),
        ];
        messages.extend(conversation(2).into_iter().skip(1));
        let out = run(
            json!({"window_size": 1, "summary_prompt": "Summarise."}),
            messages.clone(),
            model.clone(),
        )
        .await;
        let after = applied(messages, &out);
        assert_eq!(
            after,
            vec![
                Message::system("Be brief."),
                Message::system(format!("{SUMMARY_PREFIX}Everything so far.")),
                Message::assistant("a2"),
            ]
        );
        assert_eq!(
            model.requests()[0].messages,
            vec![
                Message::system("Summarise."),
                Message::user("earlier summary: Old stuff.\nuser: q1\nassistant: a1\nuser: q2\n")
            ]
            .into()
        );
    }

    #[tokio::test]
    async fn nothing_dropped_means_no_change_and_no_call() {
        let model = CannedModel::new(vec![]);
        let out = run(json!({"window_size": 4}), conversation(2), model.clone()).await;
        assert!(out.delta.is_empty());
        assert!(model.requests().is_empty());
        assert_eq!(
            out.output,
            json!({"dropped": 0, "kept": 5, "summarized": false})
        );
    }

    #[tokio::test]
    async fn without_summarize_it_just_drops() {
        let model = CannedModel::new(vec![]);
        let messages = conversation(3);
        let out = run(
            json!({"memory_window": 3, "summarize": false}),
            messages.clone(),
            model.clone(),
        )
        .await;
        assert!(model.requests().is_empty());
        assert_eq!(out.delta.usage, None);
        assert_eq!(
            applied(messages, &out),
            vec![
                Message::system("Be brief."),
                Message::assistant("a2"),
                Message::user("q3"),
                Message::assistant("a3")
            ]
        );
    }

    #[tokio::test]
    async fn keep_system_false_counts_system_messages_too() {
        let model = CannedModel::new(vec![]);
        let messages = conversation(2);
        let out = run(
            json!({"window_size": 2, "summarize": false, "keep_system": false}),
            messages.clone(),
            model,
        )
        .await;
        assert_eq!(
            applied(messages, &out),
            vec![Message::user("q2"), Message::assistant("a2")]
        );
    }

    #[tokio::test]
    async fn tool_results_stay_with_their_call() {
        let model = CannedModel::new(vec![]);
        let messages = vec![
            Message::user("q"),
            Message::assistant("thinking"),
            Message {
                tool_calls: vec![call("c1", "a", json!({})), call("c2", "b", json!({}))],
                ..Message::assistant("")
            },
            Message::tool_result("c1", "a", "r1"),
            Message::tool_result("c2", "b", "r2"),
        ];
        let out = run(
            json!({"window_size": 1, "summarize": false}),
            messages.clone(),
            model,
        )
        .await;
        assert_eq!(applied(messages.clone(), &out), messages[2..].to_vec());
    }

    #[tokio::test]
    async fn summary_provider_is_honoured() {
        let default = CannedModel::new(vec![]);
        let small = CannedModel::new(vec![reply("short", vec![])]);
        let mut services = services_with_model(default.clone());
        services.models.register("cheap", small.clone());
        let s = spec(
            "mem",
            "memory",
            json!({"window_size": 1, "summary_provider": "cheap"}),
        );
        let node = build(&MemoryFactory, &s);
        let out = node
            .run(context(s, State::new(json!({}), conversation(1)), services).0)
            .await
            .unwrap();
        assert!(default.requests().is_empty());
        assert_eq!(small.requests().len(), 1);
        assert_eq!(out.output["summarized"], true);
    }

    #[tokio::test]
    async fn budget_spent_refuses_the_summary_call() {
        let model = CannedModel::new(vec![reply("s", vec![])]);
        let s = spec("mem", "memory", json!({"window_size": 1}));
        let node = build(&MemoryFactory, &s);
        let (mut ctx, _) = context(
            s,
            State::new(json!({}), conversation(2)),
            services_with_model(model.clone()),
        );
        ctx.tokens_left = Some(0);
        let err = node.run(ctx).await.unwrap_err();
        assert!(matches!(err, crate::Error::LimitExceeded { .. }), "{err}");
        assert!(model.requests().is_empty());
    }

    #[test]
    fn bad_configs_are_refused() {
        let err = MemoryFactory
            .build(&spec("mem", "memory", json!({"window_size": 0})))
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "configuration error: node `mem`: config `window_size` must be between 1 and 10000, found 0"
        );
        let err = MemoryFactory
            .build(&spec("mem", "memory", json!({"keep_system": "yes"})))
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "configuration error: node `mem`: config `keep_system` must be a boolean, found a string"
        );
    }
}
