//! [`MeteredModel`]: counts a plain provider's calls in [`ModelCounters`].

use std::sync::Arc;

use async_trait::async_trait;

use super::observer::ModelCounters;
use crate::error::Result;
use crate::event::EventSink;
use crate::model::{ChatModel, ChatRequest, ChatResponse, ObservedResponse, TokenSink};

/// A provider whose calls are counted (requests, failures, tokens, cost) under a name, in
/// counters that render as the orchestrator's [`super::MetricsSnapshot`]. A host that serves
/// providers without an [`super::Orchestrator`] wraps each in one to get the same `llm_*`
/// series. It changes nothing else: every call goes to the wrapped provider unchanged.
///
/// ```
/// use std::sync::Arc;
/// use chatter_core::model::{ChatModel, ChatRequest, Message};
/// use chatter_core::orchestration::{MemoStats, MeteredModel, ModelCounters};
/// use chatter_core::providers::ScriptedModel;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let counters = Arc::new(ModelCounters::default());
/// let model = MeteredModel::new("scripted", Arc::new(ScriptedModel::always("hi")), counters.clone());
/// model.chat(ChatRequest { messages: vec![Message::user("hello")].into(), ..Default::default() }).await?;
/// let snapshot = counters.snapshot(MemoStats::default());
/// assert_eq!(snapshot.llm_requests_total, 1);
/// assert!(snapshot.render_prometheus().contains("llm_requests_total{model=\"scripted\"} 1"));
/// # Ok::<(), chatter_core::Error>(()) }).unwrap();
/// ```
pub struct MeteredModel {
    name: String,
    inner: Arc<dyn ChatModel>,
    counters: Arc<ModelCounters>,
}

impl std::fmt::Debug for MeteredModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredModel")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl MeteredModel {
    /// Counts the calls of `inner` under the model name `name`.
    pub fn new(
        name: impl Into<String>,
        inner: Arc<dyn ChatModel>,
        counters: Arc<ModelCounters>,
    ) -> MeteredModel {
        MeteredModel {
            name: name.into(),
            inner,
            counters,
        }
    }

    fn record_ok(&self, response: &ChatResponse) {
        self.counters.attempt(&self.name, true);
        self.counters.usage(&self.name, &response.usage);
    }

    fn record_result(&self, result: &Result<ChatResponse>) {
        match result {
            Ok(response) => self.record_ok(response),
            Err(_) => self.counters.attempt(&self.name, false),
        }
    }
}

#[async_trait]
impl ChatModel for MeteredModel {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse> {
        let result = self.inner.chat(request).await;
        self.record_result(&result);
        result
    }

    async fn chat_stream(
        &self,
        request: ChatRequest,
        sink: &dyn TokenSink,
    ) -> Result<ChatResponse> {
        let result = self.inner.chat_stream(request, sink).await;
        self.record_result(&result);
        result
    }

    async fn chat_observed(
        &self,
        request: ChatRequest,
        sink: Option<&dyn TokenSink>,
        events: &dyn EventSink,
    ) -> Result<ObservedResponse> {
        let result = self.inner.chat_observed(request, sink, events).await;
        match &result {
            Ok(observed) => self.record_ok(&observed.response),
            Err(_) => self.counters.attempt(&self.name, false),
        }
        result
    }
}
