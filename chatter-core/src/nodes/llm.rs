//! The `llm` node (aliases `model`, `call_model`): one call to a chat model.
//!
//! **Config** (all optional):
//! - `provider`: the model provider's name in the [`crate::ModelRegistry`] (default: the
//!   registry's default provider); `model`: the model name passed in the request.
//! - `temperature` (0..=2), `max_tokens` (1..=1 000 000), `top_p` (0..=1), `stop` (list of
//!   strings): passed in the request when set.
//! - `system_prompt` (template; old name `system_message`): rendered against the state and sent
//!   first. It is sent, not stored: the state's messages are not changed by it, and a system
//!   message of the state with the same text is not sent twice.
//! - `prompt` (template): rendered and appended as a user message (sent and stored) before the
//!   call; skipped when it renders to blank text, and when the last message is a tool result
//!   (the model is then continuing its own turn after its tool calls, as on the second pass of
//!   an `llm` ⇄ `tool` loop).
//! - `tools` (list of tool names): these tools are offered to the model. Otherwise, when
//!   `enable_tools` is true (its default is true when `allowed_tools` is given, else false), every
//!   registered tool is offered, restricted to `allowed_tools` when given. `tool_choice`
//!   (`auto`|`none`|`required`) is passed when tools are offered.
//! - `client_tools` (default false): also offer the tools the caller of the execution brought
//!   in its input (`input.tools`: `{name, description, parameters}` objects; `input.tool_choice`
//!   overrides `tool_choice`). The model's calls of such tools are not run by the workflow: they
//!   are for the caller (the OpenAI-compatible endpoint answers them as `tool_calls`), so a
//!   workflow taking client tools should end after this node when the reply has tool calls.
//! - `stream` (default true; old name `enable_streaming`): stream the reply, emitting a `token`
//!   event per chunk.
//! - `response_format` (`text`|`json`): `json` asks for a JSON object reply.
//! - `output_variable`: also store the reply text in `variables.<name>`.
//!
//! **Reads:** `messages` (the conversation sent), the whole state for the templates.
//! **Writes:** `messages` (the rendered `prompt`, then the assistant reply with its tool calls),
//! `usage` (the call's tokens and cost), `variables.<output_variable>`.
//!
//! **Records** in the node run's output: the reply, the model, the finish reason and the usage;
//! with a model that routes (the orchestrator's), also `routing`: the decision and its reason,
//! the model that answered, every attempt and whether the memo answered.
//!
//! **Refuses** to call the model ([`crate::Error::LimitExceeded`], limit `max_tokens` or
//! `max_cost`) when the execution's token or cost budget is spent; passes the node run's
//! idempotency key in the request; stops when the node is cancelled.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Value, json};

use crate::definition::NodeSpec;
use crate::engine::{Node, NodeContext, NodeFactory, NodeOutput, OutputValue};
use crate::error::Result;
use crate::expr::PromptTemplate;
use crate::model::{
    ChatRequest, FinishReason, Message, Role, ToolCall, ToolChoice, ToolSpec, Usage,
};
use crate::nodes::common::{Config, call_model, check_budget};
use crate::object::{self, Keys};
use crate::state::{StateDelta, VariableOp};

/// Config of an `llm` node.
#[derive(Debug, Clone)]
pub struct LlmConfig {
    /// `provider`.
    pub provider: Option<String>,
    /// `model`.
    pub model: Option<String>,
    /// `temperature`.
    pub temperature: Option<f64>,
    /// `max_tokens`.
    pub max_tokens: Option<u64>,
    /// `top_p`.
    pub top_p: Option<f64>,
    /// `stop`.
    pub stop: Vec<String>,
    /// `system_prompt` / `system_message`.
    pub system_prompt: Option<PromptTemplate>,
    /// `prompt`.
    pub prompt: Option<PromptTemplate>,
    /// `tools`.
    pub tools: Vec<String>,
    /// `enable_tools` (resolved default).
    pub enable_tools: bool,
    /// `allowed_tools`.
    pub allowed_tools: Option<Vec<String>>,
    /// `tool_choice`.
    pub tool_choice: Option<ToolChoice>,
    /// `stream`.
    pub stream: bool,
    /// `response_format: json`.
    pub json_mode: bool,
    /// `output_variable`.
    pub output_variable: Option<String>,
    /// `client_tools`.
    pub client_tools: bool,
}

impl LlmConfig {
    /// Reads and checks the config of `spec`.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Config`] naming the node and key for a wrong type or range, or a `tools`
    /// entry outside `allowed_tools`.
    pub fn from_spec(spec: &NodeSpec) -> Result<LlmConfig> {
        let c = Config::new(spec);
        let allowed_tools = c.string_list("allowed_tools")?;
        let tools = c.string_list("tools")?.unwrap_or_default();
        if let Some(allowed) = &allowed_tools
            && let Some(bad) = tools.iter().find(|t| !allowed.contains(t))
        {
            return Err(c.error(
                "tools",
                format!("names `{bad}`, which is not in `allowed_tools`"),
            ));
        }
        let stream = match c.boolean("stream")? {
            Some(b) => b,
            None => c.boolean("enable_streaming")?.unwrap_or(true),
        };
        Ok(LlmConfig {
            provider: c.name("provider")?,
            model: c.name("model")?,
            temperature: c.number("temperature", 0.0, 2.0)?,
            max_tokens: c.integer("max_tokens", 1, 1_000_000)?,
            top_p: c.number("top_p", 0.0, 1.0)?,
            stop: c.string_list("stop")?.unwrap_or_default(),
            system_prompt: c.template_of(&["system_prompt", "system_message"])?,
            prompt: c.template("prompt")?,
            enable_tools: c
                .boolean("enable_tools")?
                .unwrap_or(allowed_tools.is_some()),
            tools,
            allowed_tools,
            tool_choice: c
                .one_of("tool_choice", &["auto", "none", "required"])?
                .map(|choice| match choice {
                    "none" => ToolChoice::None,
                    "required" => ToolChoice::Required,
                    _ => ToolChoice::Auto,
                }),
            stream,
            json_mode: c.one_of("response_format", &["text", "json"])? == Some("json"),
            output_variable: c.name("output_variable")?,
            client_tools: c.boolean("client_tools")?.unwrap_or(false),
        })
    }
}

/// Builds [`LlmNode`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct LlmFactory;

impl NodeFactory for LlmFactory {
    fn build(&self, spec: &NodeSpec) -> Result<Arc<dyn Node>> {
        Ok(Arc::new(LlmNode::new(LlmConfig::from_spec(spec)?)))
    }
}

/// Calls a chat model.
#[derive(Debug, Clone)]
pub struct LlmNode {
    config: LlmConfig,
}

impl LlmNode {
    /// A node with this config.
    pub fn new(config: LlmConfig) -> LlmNode {
        LlmNode { config }
    }

    /// The specs of the tools offered to the model: the node's own, then the caller's
    /// (`client_tools`). Without the caller's, the node's own list as it is (shared).
    fn offered_tools(&self, ctx: &NodeContext) -> Result<Arc<[ToolSpec]>> {
        let own = self.bound_tools(ctx)?;
        let given = match ctx.state.input().get("tools") {
            Some(Value::Array(given)) if self.config.client_tools && !given.is_empty() => given,
            _ => return Ok(own),
        };
        let mut tools = own.to_vec();
        for (i, spec) in given.iter().enumerate() {
            let spec: ToolSpec =
                serde_json::from_value(spec.clone()).map_err(|e| crate::Error::InvalidInput {
                    message: format!(
                        "node `{}`: input.tools[{i}] is not a tool (`name`, `description`, \
                         `parameters`): {e}",
                        ctx.node_id()
                    ),
                })?;
            if !tools.iter().any(|t| t.name == spec.name) {
                tools.push(spec);
            }
        }
        Ok(tools.into())
    }

    /// `tool_choice`: the caller's (`input.tool_choice`) with `client_tools`, else the node's.
    fn tool_choice(&self, ctx: &NodeContext) -> Option<ToolChoice> {
        let given = self
            .config
            .client_tools
            .then(|| ctx.state.input().get("tool_choice").and_then(Value::as_str))
            .flatten();
        match given {
            Some("auto") => Some(ToolChoice::Auto),
            Some("none") => Some(ToolChoice::None),
            Some("required") => Some(ToolChoice::Required),
            _ => self.config.tool_choice,
        }
    }

    /// The specs of the node's own tools.
    fn bound_tools(&self, ctx: &NodeContext) -> Result<Arc<[ToolSpec]>> {
        let registry = &ctx.services.tools;
        let named = if !self.config.tools.is_empty() {
            &self.config.tools
        } else if !self.config.enable_tools {
            return Ok(Arc::from([]));
        } else {
            match &self.config.allowed_tools {
                Some(allowed) => allowed,
                None => return Ok(registry.specs()),
            }
        };
        named
            .iter()
            .map(|name| registry.get(name).map(|t| t.spec()))
            .collect()
    }
}

#[async_trait]
impl Node for LlmNode {
    /// It calls the outside world (models, tools, HTTP endpoints): a durable execution records
    /// its intent first.
    fn side_effects(&self) -> bool {
        true
    }

    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput> {
        check_budget(&ctx)?;
        let config = &self.config;
        let state_context =
            (config.system_prompt.is_some() || config.prompt.is_some()).then(|| {
                let mut keys: Vec<&str> = Vec::new();
                for template in [&config.system_prompt, &config.prompt]
                    .into_iter()
                    .flatten()
                {
                    for key in template.state_reads() {
                        if !keys.contains(key) {
                            keys.push(key);
                        }
                    }
                }
                ctx.expr_context_for(&keys)
            });
        let render = |template: &Option<PromptTemplate>| -> Result<Option<String>> {
            match (template, &state_context) {
                (Some(t), Some(c)) => Ok(Some(t.render(c)?).filter(|s| !s.trim().is_empty())),
                _ => Ok(None),
            }
        };
        let system = render(&config.system_prompt)?;
        let continuing = ctx
            .state
            .last_message()
            .is_some_and(|m| m.role == Role::Tool);
        let prompt = if continuing {
            None
        } else {
            render(&config.prompt)?.map(Message::user)
        };

        // An agent's later calls add nothing to the history: they are handed it, not a copy.
        let messages = if system.is_none() && prompt.is_none() {
            ctx.state.shared_messages()
        } else {
            let history = ctx.state.messages();
            let mut messages = Vec::with_capacity(history.len() + 2);
            if let Some(system) = &system {
                messages.push(Message::system(system.clone()));
            }
            messages.extend(
                history
                    .iter()
                    .filter(|m| !(m.role == Role::System && Some(&m.content) == system.as_ref()))
                    .cloned(),
            );
            messages.extend(prompt.clone());
            Arc::new(messages)
        };

        let tools = self.offered_tools(&ctx)?;
        let request = ChatRequest {
            model: config.model.clone(),
            messages,
            temperature: config.temperature,
            max_tokens: config.max_tokens,
            top_p: config.top_p,
            stop: config.stop.clone(),
            tool_choice: if tools.is_empty() {
                None
            } else {
                self.tool_choice(&ctx)
            },
            tools,
            json_mode: config.json_mode,
            idempotency_key: Some(ctx.idempotency_key()),
        };
        let model = ctx.services.models.get(config.provider.as_deref())?;
        let observed = call_model(&ctx, model.as_ref(), request, config.stream).await?;
        let response = observed.response;

        let mut reply = response.message;
        reply.role = Role::Assistant;
        // Made when read: most runs never read it (see `OutputValue`).
        let (content, tool_calls) = (reply.content.clone(), reply.tool_calls.clone());
        let (model, finish_reason, usage) =
            (response.model, response.finish_reason, response.usage);
        let routing = observed.report;
        let output = OutputValue::lazy(move || {
            reply_output(
                &content,
                &tool_calls,
                &model,
                &finish_reason,
                &usage,
                routing.as_ref(),
            )
        });
        let mut delta = StateDelta {
            usage: Some(response.usage),
            ..StateDelta::default()
        };
        if let Some(name) = &config.output_variable {
            delta
                .variables
                .push((name.clone(), VariableOp::Set(json!(reply.content))));
        }
        delta.messages.extend(prompt);
        delta.messages.push(reply);
        Ok(NodeOutput {
            delta,
            output,
            ..NodeOutput::default()
        })
    }
}

/// The node's output for a reply: `content`, `tool_calls` (`id`, `name`, `arguments`),
/// `model`, `finish_reason` and `usage`, as `serde` writes them, built directly (through
/// `serde`'s serializer every key of it is hashed as it is inserted), then the model router's
/// `routing` report when there is one.
fn reply_output(
    content: &str,
    tool_calls: &[ToolCall],
    model: &str,
    finish_reason: &FinishReason,
    usage: &Usage,
    routing: Option<&Value>,
) -> Value {
    static OUTPUT: Keys<5> =
        Keys::new(["content", "tool_calls", "model", "finish_reason", "usage"]);
    let finish_reason = match finish_reason {
        FinishReason::Stop => Value::from("stop"),
        FinishReason::Length => Value::from("length"),
        FinishReason::ToolCalls => Value::from("tool_calls"),
        FinishReason::ContentFilter => Value::from("content_filter"),
        other => serde_json::to_value(other).unwrap_or(Value::Null),
    };
    let mut output = OUTPUT.object([
        Value::String(content.to_owned()),
        Value::Array(tool_calls.iter().map(object::tool_call).collect()),
        Value::String(model.to_owned()),
        finish_reason,
        object::usage(usage),
    ]);
    if let (Some(report), Some(map)) = (routing, output.as_object_mut()) {
        map.insert("routing".to_owned(), report.clone());
    }
    output
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Route, Services};
    use crate::error::Error;
    use crate::event::EventKind;
    use crate::model::ChatResponse;
    use crate::nodes::testing::*;
    use crate::state::State;
    use serde_json::Value;

    fn run_ctx(
        config: Value,
        state: State,
        services: Services,
    ) -> (Arc<dyn Node>, NodeContext, Arc<Recorder>) {
        let s = spec("chat", "llm", config);
        let node = build(&LlmFactory, &s);
        let (ctx, events) = context(s, state, services);
        (node, ctx, events)
    }

    #[tokio::test]
    async fn calls_the_model_with_node_settings_and_appends_the_reply() {
        let model = CannedModel::new(vec![reply("Hello there", vec![])]);
        let (node, ctx, events) = run_ctx(
            json!({"model": "m-large", "temperature": 0.2, "max_tokens": 300, "top_p": 0.9,
                   "stop": ["END"], "system_prompt": "You are terse.", "stream": false,
                   "response_format": "json", "output_variable": "answer"}),
            State::new(json!({"message": "hi"}), vec![]),
            services_with_model(model.clone()),
        );
        let out = node.run(ctx).await.unwrap();
        let requests = model.requests();
        assert_eq!(requests.len(), 1);
        let r = &requests[0];
        assert_eq!(r.model.as_deref(), Some("m-large"));
        assert_eq!(r.temperature, Some(0.2));
        assert_eq!(r.max_tokens, Some(300));
        assert_eq!(r.top_p, Some(0.9));
        assert_eq!(r.stop, ["END"]);
        assert!(r.json_mode);
        assert_eq!(r.idempotency_key.as_deref(), Some("exec1:chat:0:1"));
        assert_eq!(
            r.messages,
            vec![Message::system("You are terse."), Message::user("hi")].into()
        );
        assert!(r.tools.is_empty());
        assert_eq!(r.tool_choice, None);
        // Not streamed: no token events.
        assert!(events.take().is_empty());
        assert_eq!(*model.streamed.lock().unwrap(), 0);

        assert_eq!(out.route, Route::Edges);
        assert_eq!(
            out.delta,
            StateDelta {
                messages: vec![Message::assistant("Hello there")],
                usage: Some(usage(10, 5)),
                variables: vec![("answer".into(), VariableOp::Set(json!("Hello there")))],
                ..StateDelta::default()
            }
        );
        assert_eq!(out.output["content"], "Hello there");
        assert_eq!(out.output["usage"]["total_tokens"], 15);
        assert_eq!(out.output["finish_reason"], "stop");
    }

    /// The output is built as `json!` of the reply's parts (through `serde`) would build it:
    /// the same value, the keys in the same order.
    #[test]
    fn reply_output_is_what_serde_makes_of_the_reply() {
        let calls = vec![
            crate::model::ToolCall {
                id: "c1".into(),
                name: "lookup".into(),
                arguments: json!({"q": "oslo", "n": [1, 2.5, {"deep": null}]}),
            },
            crate::model::ToolCall {
                id: "c2".into(),
                name: "noop".into(),
                arguments: json!({}),
            },
        ];
        let reasons = [
            FinishReason::Stop,
            FinishReason::Length,
            FinishReason::ToolCalls,
            FinishReason::ContentFilter,
            FinishReason::Other("safety".into()),
        ];
        for (reason, cost, calls) in [
            (&reasons[0], 0.0, vec![]),
            (&reasons[1], 0.25, calls.clone()),
            (&reasons[2], 1e-9, calls.clone()),
            (&reasons[3], f64::NAN, vec![]),
            (&reasons[4], 3.0, calls),
        ] {
            let reply = Message {
                tool_calls: calls,
                ..Message::assistant("Hello \"there\"")
            };
            let usage = Usage {
                prompt_tokens: 12,
                completion_tokens: u64::MAX,
                total_tokens: 7,
                cost,
            };
            let expected = json!({
                "content": reply.content,
                "tool_calls": reply.tool_calls,
                "model": "m-1",
                "finish_reason": reason,
                "usage": usage,
            });
            let built = reply_output(
                &reply.content,
                &reply.tool_calls,
                "m-1",
                reason,
                &usage,
                None,
            );
            assert_eq!(built, expected);
            assert_eq!(
                built.to_string(),
                expected.to_string(),
                "keys in the same order"
            );
            // A router's report comes last.
            let report = json!({"chosen": "m-1"});
            let routed = reply_output(
                &reply.content,
                &reply.tool_calls,
                "m-1",
                reason,
                &usage,
                Some(&report),
            );
            let mut expected = expected;
            expected["routing"] = report;
            assert_eq!(routed.to_string(), expected.to_string());
        }
    }

    #[tokio::test]
    async fn streams_tokens_as_events() {
        let model = CannedModel::new(vec![reply("one two three", vec![])]);
        let (node, ctx, events) = run_ctx(
            json!({}),
            State::new(json!({"message": "hi"}), vec![]),
            services_with_model(model.clone()),
        );
        node.run(ctx).await.unwrap();
        let texts: Vec<(String, String)> = events
            .take()
            .into_iter()
            .map(|e| match e {
                EventKind::Token { node_id, text } => (node_id, text),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(
            texts,
            [
                ("chat".into(), "one".into()),
                ("chat".into(), " two".into()),
                ("chat".into(), " three".into())
            ]
        );
    }

    #[tokio::test]
    async fn system_prompt_is_first_and_not_duplicated_prompt_is_appended() {
        let model = CannedModel::new(vec![reply("ok", vec![])]);
        let history = vec![
            Message::system("Be kind."),
            Message::system("Summary: earlier talk"),
            Message::user("q1"),
            Message::assistant("a1"),
        ];
        let (node, ctx, _) = run_ctx(
            json!({"system_message": "Be kind.", "prompt": "Now answer briefly."}),
            State::new(json!({}), history),
            services_with_model(model.clone()),
        );
        let out = node.run(ctx).await.unwrap();
        assert_eq!(
            model.requests()[0].messages,
            vec![
                Message::system("Be kind."),
                Message::system("Summary: earlier talk"),
                Message::user("q1"),
                Message::assistant("a1"),
                Message::user("Now answer briefly."),
            ]
            .into()
        );
        assert_eq!(
            out.delta.messages,
            vec![
                Message::user("Now answer briefly."),
                Message::assistant("ok")
            ]
        );
    }

    #[tokio::test]
    async fn prompt_is_not_repeated_after_tool_results() {
        let model = CannedModel::new(vec![reply("done", vec![])]);
        let history = vec![
            Message::user("q"),
            Message::user("Use the tools."),
            Message {
                tool_calls: vec![call("c1", "search", json!({}))],
                ..Message::assistant("")
            },
            Message::tool_result("c1", "search", "found"),
        ];
        let (node, ctx, _) = run_ctx(
            json!({"prompt": "Use the tools."}),
            State::new(json!({}), history.clone()),
            services_with_model(model.clone()),
        );
        let shared = ctx.state.shared_messages();
        let out = node.run(ctx).await.unwrap();
        let request = &model.requests()[0];
        assert_eq!(*request.messages, history);
        // Adding nothing, the call is handed the run's history itself, not a copy.
        assert!(Arc::ptr_eq(&request.messages, &shared));
        assert_eq!(out.delta.messages, vec![Message::assistant("done")]);
    }

    #[tokio::test]
    async fn calls_while_budget_remains_and_not_once_cancelled() {
        let model = CannedModel::new(vec![reply("ok", vec![])]);
        let (node, mut ctx, _) = run_ctx(
            json!({}),
            State::default(),
            services_with_model(model.clone()),
        );
        ctx.tokens_left = Some(1);
        ctx.cost_left = Some(0.01);
        node.run(ctx.clone()).await.unwrap();
        assert_eq!(model.requests().len(), 1);
        ctx.cancel.cancel();
        let err = node.run(ctx).await.unwrap_err();
        assert_eq!(err.to_string(), "cancelled: node `chat` was cancelled");
        assert_eq!(model.requests().len(), 1);
    }

    #[tokio::test]
    async fn system_prompt_is_rendered_against_the_state() {
        let model = CannedModel::new(vec![reply("ok", vec![])]);
        let (node, ctx, _) = run_ctx(
            json!({"system_prompt": "Help {{ variables.name }}."}),
            State::new(
                json!({"message": "hi", "variables": {"name": "Ada"}}),
                vec![],
            ),
            services_with_model(model.clone()),
        );
        node.run(ctx).await.unwrap();
        assert_eq!(
            model.requests()[0].messages[0],
            Message::system("Help Ada.")
        );
    }

    #[tokio::test]
    async fn binds_tools_and_keeps_tool_calls_of_the_reply() {
        let model = CannedModel::new(vec![
            reply("", vec![call("c1", "search", json!({"q": "x"}))]),
            reply("", vec![]),
            reply("", vec![]),
        ]);
        let mut services = services_with_model(model.clone());
        services
            .tools
            .register(TestTool::new("search", Behaviour::Echo));
        services
            .tools
            .register(TestTool::new("calc", Behaviour::Echo));
        services
            .tools
            .register(TestTool::new("shell", Behaviour::Echo));
        let state = State::new(json!({"message": "find x"}), vec![]);

        let (node, ctx, _) = run_ctx(
            json!({"tools": ["search"], "tool_choice": "required"}),
            state.clone(),
            services.clone(),
        );
        let out = node.run(ctx).await.unwrap();
        assert_eq!(
            out.delta.messages[0].tool_calls,
            vec![call("c1", "search", json!({"q": "x"}))]
        );
        let names = |i: usize| -> Vec<String> {
            model.requests()[i]
                .tools
                .iter()
                .map(|t| t.name.clone())
                .collect()
        };
        assert_eq!(names(0), ["search"]);
        assert_eq!(model.requests()[0].tool_choice, Some(ToolChoice::Required));
        assert_eq!(model.requests()[0].tools[0].description, "the search tool");

        // Every tool offered: the registry's own list, not a copy.
        let every = services.tools.specs();
        let (node, ctx, _) = run_ctx(
            json!({"enable_tools": true}),
            state.clone(),
            services.clone(),
        );
        node.run(ctx).await.unwrap();
        assert_eq!(names(1), ["calc", "search", "shell"]);
        assert!(Arc::ptr_eq(&model.requests()[1].tools, &every));

        let (node, ctx, _) = run_ctx(json!({"allowed_tools": ["shell", "calc"]}), state, services);
        node.run(ctx).await.unwrap();
        assert_eq!(names(2), ["shell", "calc"]);
    }

    #[tokio::test]
    async fn unknown_tool_or_provider_is_not_found() {
        let model = CannedModel::new(vec![reply("x", vec![])]);
        let (node, ctx, _) = run_ctx(
            json!({"tools": ["nope"]}),
            State::default(),
            services_with_model(model.clone()),
        );
        let err = node.run(ctx).await.unwrap_err();
        assert_eq!(err.to_string(), "unknown tool `nope`");
        let (node, ctx, _) = run_ctx(
            json!({"provider": "other"}),
            State::default(),
            services_with_model(model.clone()),
        );
        let err = node.run(ctx).await.unwrap_err();
        assert_eq!(err.to_string(), "unknown model provider `other`");
        assert!(model.requests().is_empty());
    }

    #[tokio::test]
    async fn picks_the_named_provider() {
        let a = CannedModel::new(vec![reply("from a", vec![])]);
        let b = CannedModel::new(vec![reply("from b", vec![])]);
        let mut services = services_with_model(a.clone());
        services.models.register("b", b.clone());
        let (node, ctx, _) = run_ctx(json!({"provider": "b"}), State::default(), services);
        let out = node.run(ctx).await.unwrap();
        assert_eq!(out.delta.messages[0].content, "from b");
        assert!(a.requests().is_empty());
    }

    #[tokio::test]
    async fn refuses_when_budget_is_spent() {
        let model = CannedModel::new(vec![reply("x", vec![])]);
        let (node, mut ctx, _) = run_ctx(
            json!({}),
            State::default(),
            services_with_model(model.clone()),
        );
        ctx.tokens_left = Some(0);
        let err = node.run(ctx.clone()).await.unwrap_err();
        assert!(
            matches!(&err, Error::LimitExceeded { limit, .. } if limit == "max_tokens"),
            "{err}"
        );
        ctx.tokens_left = Some(5);
        ctx.cost_left = Some(0.0);
        let err = node.run(ctx).await.unwrap_err();
        assert!(
            matches!(&err, Error::LimitExceeded { limit, .. } if limit == "max_cost"),
            "{err}"
        );
        assert!(model.requests().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_stops_a_hanging_call() {
        let model = CannedModel::hanging();
        let (node, ctx, _) = run_ctx(json!({}), State::default(), services_with_model(model));
        let cancel = ctx.cancel.clone();
        let task = tokio::spawn(async move { node.run(ctx).await });
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        cancel.cancel();
        let err = task.await.unwrap().unwrap_err();
        assert_eq!(err.to_string(), "cancelled: node `chat` was cancelled");
    }

    #[tokio::test]
    async fn model_errors_propagate() {
        let model = CannedModel::new(Vec::<ChatResponse>::new());
        let (node, ctx, _) = run_ctx(json!({}), State::default(), services_with_model(model));
        let err = node.run(ctx).await.unwrap_err();
        assert_eq!(err.class(), Some(crate::ErrorClass::Model));
    }

    #[test]
    fn bad_configs_are_rejected() {
        let cases = [
            (
                json!({"temperature": 2.5}),
                "config `temperature` must be between 0 and 2, found 2.5",
            ),
            (
                json!({"max_tokens": 0}),
                "config `max_tokens` must be between 1 and 1000000, found 0",
            ),
            (
                json!({"tool_choice": "any"}),
                "config `tool_choice` must be one of auto, none, required, found \"any\"",
            ),
            (
                json!({"tools": ["a"], "allowed_tools": ["b"]}),
                "config `tools` names `a`, which is not in `allowed_tools`",
            ),
            (
                json!({"response_format": "xml"}),
                "config `response_format` must be one of text, json, found \"xml\"",
            ),
            (
                json!({"provider": ""}),
                "config `provider` must not be empty",
            ),
        ];
        for (config, message) in cases {
            let err = LlmFactory
                .build(&spec("chat", "llm", config))
                .err()
                .unwrap();
            assert_eq!(
                err.to_string(),
                format!("configuration error: node `chat`: {message}")
            );
        }
    }

    #[tokio::test]
    async fn client_tools_from_the_input_are_offered_only_when_the_node_allows_them() {
        let input = json!({
            "message": "weather?",
            "tools": [{"name": "get_weather", "description": "Weather of a city",
                       "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "tool_choice": "required",
        });
        let model = CannedModel::new(vec![reply("", vec![])]);
        let (node, ctx, _) = run_ctx(
            json!({"client_tools": true, "stream": false}),
            State::new(input.clone(), vec![]),
            services_with_model(model.clone()),
        );
        node.run(ctx).await.unwrap();
        let r = &model.requests()[0];
        let names: Vec<&str> = r.tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["get_weather"]);
        assert_eq!(r.tools[0].description, "Weather of a city");
        assert_eq!(r.tool_choice, Some(ToolChoice::Required));

        let model = CannedModel::new(vec![reply("", vec![])]);
        let (node, ctx, _) = run_ctx(
            json!({"stream": false}),
            State::new(input, vec![]),
            services_with_model(model.clone()),
        );
        node.run(ctx).await.unwrap();
        let r = &model.requests()[0];
        assert!(r.tools.is_empty());
        assert_eq!(r.tool_choice, None);
    }

    #[tokio::test]
    async fn a_malformed_client_tool_is_refused_naming_it() {
        let model = CannedModel::new(vec![reply("", vec![])]);
        let (node, ctx, _) = run_ctx(
            json!({"client_tools": true, "stream": false}),
            State::new(
                json!({"message": "hi", "tools": [{"description": "no name"}]}),
                vec![],
            ),
            services_with_model(model.clone()),
        );
        let error = node.run(ctx).await.unwrap_err().to_string();
        assert!(error.contains("input.tools[0]"), "{error}");
        assert_eq!(model.requests().len(), 0);
    }
}
