//! Test doubles shared by the node tests: a canned chat model, a recording event sink, simple
//! tools and retrievers, and context builders.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use crate::definition::NodeSpec;
use crate::engine::{Node, NodeContext, NodeFactory, Services};
use crate::error::{Error, ErrorClass, Result};
use crate::event::{EventKind, EventSink};
use crate::model::{
    ChatModel, ChatRequest, ChatResponse, FinishReason, Message, TokenSink, ToolCall, Usage,
};
use crate::retriever::{ContextChunk, RetrievalQuery, Retriever};
use crate::state::State;
use crate::tool::{Tool, ToolContext, ToolSpec};

/// A node spec from a JSON config object.
pub(crate) fn spec(id: &str, kind: &str, config: Value) -> NodeSpec {
    let map = match config {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    NodeSpec::new(id, kind, map)
}

/// Builds a node with a factory.
pub(crate) fn build(factory: &dyn NodeFactory, spec: &NodeSpec) -> Arc<dyn Node> {
    factory.build(spec).expect("config is valid")
}

/// Records every event.
#[derive(Default)]
pub(crate) struct Recorder {
    pub(crate) events: Mutex<Vec<EventKind>>,
}

impl EventSink for Recorder {
    fn emit(&self, kind: EventKind) {
        self.events.lock().unwrap().push(kind);
    }
}

impl Recorder {
    pub(crate) fn take(&self) -> Vec<EventKind> {
        std::mem::take(&mut *self.events.lock().unwrap())
    }
}

/// A context with a recorder attached.
pub(crate) fn context(
    spec: NodeSpec,
    state: State,
    services: Services,
) -> (NodeContext, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let mut ctx = NodeContext::new("exec1", spec, state, Arc::new(services));
    ctx.events = recorder.clone();
    (ctx, recorder)
}

/// A usage with `total` = prompt + completion and no cost.
pub(crate) fn usage(prompt: u64, completion: u64) -> Usage {
    Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt + completion,
        cost: 0.0,
    }
}

/// A canned reply.
pub(crate) fn reply(content: &str, tool_calls: Vec<ToolCall>) -> ChatResponse {
    ChatResponse {
        message: Message {
            tool_calls,
            ..Message::assistant(content)
        },
        usage: usage(10, 5),
        finish_reason: FinishReason::Stop,
        model: "canned-1".into(),
    }
}

/// A tool call.
pub(crate) fn call(id: &str, name: &str, arguments: Value) -> ToolCall {
    ToolCall {
        id: id.into(),
        name: name.into(),
        arguments,
    }
}

/// A chat model returning canned replies in order, streaming them word by word, recording the
/// requests. Errors when it runs out of replies; `hang` makes it never answer.
#[derive(Default)]
pub(crate) struct CannedModel {
    replies: Mutex<VecDeque<ChatResponse>>,
    pub(crate) requests: Mutex<Vec<ChatRequest>>,
    pub(crate) streamed: Mutex<u32>,
    hang: bool,
}

impl CannedModel {
    pub(crate) fn new(replies: Vec<ChatResponse>) -> Arc<CannedModel> {
        Arc::new(CannedModel {
            replies: Mutex::new(replies.into()),
            ..CannedModel::default()
        })
    }

    pub(crate) fn hanging() -> Arc<CannedModel> {
        Arc::new(CannedModel {
            hang: true,
            ..CannedModel::default()
        })
    }

    pub(crate) fn requests(&self) -> Vec<ChatRequest> {
        self.requests.lock().unwrap().clone()
    }

    async fn next(&self, request: ChatRequest) -> Result<ChatResponse> {
        self.requests.lock().unwrap().push(request);
        if self.hang {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        self.replies
            .lock()
            .unwrap()
            .pop_front()
            .ok_or_else(|| Error::Model {
                model: "canned".into(),
                class: ErrorClass::Model,
                message: "no more canned replies".into(),
                retry_after_ms: None,
            })
    }
}

#[async_trait]
impl ChatModel for CannedModel {
    fn name(&self) -> &str {
        "canned"
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
        self.next(request).await
    }

    async fn chat_stream(
        &self,
        request: ChatRequest,
        sink: &dyn TokenSink,
    ) -> Result<ChatResponse> {
        *self.streamed.lock().unwrap() += 1;
        let response = self.next(request).await?;
        for (i, word) in response.message.content.split(' ').enumerate() {
            if i == 0 {
                sink.token(word);
            } else {
                sink.token(&format!(" {word}"));
            }
        }
        Ok(response)
    }
}

/// Services with one model registered as `canned` (the default).
pub(crate) fn services_with_model(model: Arc<CannedModel>) -> Services {
    let mut services = Services::default();
    services.models.register("canned", model);
    services
}

/// What a test tool does.
#[derive(Clone)]
pub(crate) enum Behaviour {
    /// Returns `{"tool": name, "args": arguments}`.
    Echo,
    /// Returns this value.
    Value(Value),
    /// Fails with this message.
    Fail(String),
    /// Sleeps this long, then echoes.
    Sleep(Duration),
}

/// A test tool that records its calls' contexts.
pub(crate) struct TestTool {
    pub(crate) name: String,
    pub(crate) behaviour: Behaviour,
    pub(crate) calls: Mutex<Vec<(Value, ToolContext)>>,
}

impl TestTool {
    pub(crate) fn new(name: &str, behaviour: Behaviour) -> Arc<TestTool> {
        Arc::new(TestTool {
            name: name.into(),
            behaviour,
            calls: Mutex::new(Vec::new()),
        })
    }
}

#[async_trait]
impl Tool for TestTool {
    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: self.name.clone(),
            description: format!("the {} tool", self.name),
            parameters: json!({"type": "object"}),
        }
    }

    async fn call(&self, arguments: Value, context: &ToolContext) -> Result<Value> {
        self.calls
            .lock()
            .unwrap()
            .push((arguments.clone(), context.clone()));
        match &self.behaviour {
            Behaviour::Echo => Ok(json!({"tool": self.name, "args": arguments})),
            Behaviour::Value(v) => Ok(v.clone()),
            Behaviour::Fail(message) => Err(Error::Tool {
                tool: self.name.clone(),
                class: ErrorClass::Tool,
                message: message.clone(),
            }),
            Behaviour::Sleep(d) => {
                tokio::time::sleep(*d).await;
                Ok(json!({"tool": self.name, "args": arguments}))
            }
        }
    }
}

/// A retriever returning fixed chunks (ignoring its own filtering duties), recording queries.
#[derive(Default)]
pub(crate) struct FixedRetriever {
    pub(crate) chunks: Vec<ContextChunk>,
    pub(crate) queries: Mutex<Vec<RetrievalQuery>>,
}

#[async_trait]
impl Retriever for FixedRetriever {
    async fn retrieve(&self, query: &RetrievalQuery) -> Result<Vec<ContextChunk>> {
        self.queries.lock().unwrap().push(query.clone());
        Ok(self.chunks.clone())
    }
}

/// A chunk.
pub(crate) fn chunk(content: &str, score: f64) -> ContextChunk {
    ContextChunk {
        content: content.into(),
        score,
        source: format!("doc:{content}"),
        metadata: Value::Null,
    }
}
