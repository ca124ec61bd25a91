//! The `retrieval` node: queries a retriever and puts the ranked chunks into `context`.
//!
//! **Config:**
//! - `retriever` (default `documents`): the retriever's name in the
//!   [`crate::RetrieverRegistry`].
//! - `query` (template): the query, rendered against the state; by default the content of the
//!   last user message.
//! - `top_k` (1..=100, default 5; old name `max_documents`): most chunks kept.
//! - `score_threshold` (0..=1, default 0; old name `similarity_threshold`): chunks scoring below
//!   it are dropped.
//! - `output_variable`: also store the chunks (as JSON) in `variables.<name>`.
//!
//! The node enforces `top_k` and the threshold itself too, whatever the retriever returns. With
//! a blank query (no user message yet) the retriever is not called and `context` is emptied.
//!
//! **Reads:** `messages` or the state for `query`. **Writes:** `context` (replaced),
//! `variables.<output_variable>`. Output: `{retriever, query, count}`.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::json;

use crate::definition::NodeSpec;
use crate::engine::{Node, NodeContext, NodeFactory, NodeOutput};
use crate::error::Result;
use crate::expr::PromptTemplate;
use crate::model::Role;
use crate::nodes::common::{Config, cancellable, last_content};
use crate::retriever::RetrievalQuery;
use crate::state::{StateDelta, VariableOp};

/// Config of a `retrieval` node.
#[derive(Debug, Clone)]
pub struct RetrievalConfig {
    /// `retriever`.
    pub retriever: String,
    /// `query`; `None` is the last user message.
    pub query: Option<PromptTemplate>,
    /// `top_k` / `max_documents`.
    pub top_k: usize,
    /// `score_threshold` / `similarity_threshold`.
    pub score_threshold: f64,
    /// `output_variable`.
    pub output_variable: Option<String>,
}

impl RetrievalConfig {
    /// Reads and checks the config of `spec`.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Config`] naming the node and key for a wrong type or range.
    pub fn from_spec(spec: &NodeSpec) -> Result<RetrievalConfig> {
        let c = Config::new(spec);
        Ok(RetrievalConfig {
            retriever: c
                .name("retriever")?
                .unwrap_or_else(|| "documents".to_owned()),
            query: c.template("query")?,
            top_k: c
                .integer_of(&["top_k", "max_documents"], 1, 100)?
                .unwrap_or(5) as usize,
            score_threshold: c
                .number_of(&["score_threshold", "similarity_threshold"], 0.0, 1.0)?
                .unwrap_or(0.0),
            output_variable: c.name("output_variable")?,
        })
    }
}

/// Builds [`RetrievalNode`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetrievalFactory;

impl NodeFactory for RetrievalFactory {
    fn build(&self, spec: &NodeSpec) -> Result<Arc<dyn Node>> {
        Ok(Arc::new(RetrievalNode {
            config: RetrievalConfig::from_spec(spec)?,
        }))
    }
}

/// Queries a retriever.
#[derive(Debug, Clone)]
pub struct RetrievalNode {
    config: RetrievalConfig,
}

#[async_trait]
impl Node for RetrievalNode {
    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput> {
        let config = &self.config;
        let query = match &config.query {
            Some(template) => template.render(&ctx.expr_context_for(template.state_reads()))?,
            None => last_content(ctx.state.messages(), Role::User)
                .unwrap_or_default()
                .to_owned(),
        };
        let mut chunks = if query.trim().is_empty() {
            Vec::new()
        } else {
            let retriever = ctx.services.retrievers.get(&config.retriever)?;
            let request = RetrievalQuery {
                query: query.clone(),
                top_k: config.top_k,
                score_threshold: config.score_threshold,
                owner_id: None,
            };
            cancellable(&ctx, retriever.retrieve(&request)).await?
        };
        chunks.retain(|c| c.score >= config.score_threshold);
        chunks.truncate(config.top_k);
        let mut delta = StateDelta::default();
        if let Some(name) = &config.output_variable {
            delta
                .variables
                .push((name.clone(), VariableOp::Set(json!(chunks))));
        }
        let output = json!({"retriever": config.retriever, "query": query, "count": chunks.len()});
        delta.context = Some(chunks);
        Ok(NodeOutput {
            delta,
            output: output.into(),
            ..NodeOutput::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Services;
    use crate::model::Message;
    use crate::nodes::testing::*;
    use crate::state::State;
    use serde_json::Value;

    fn services(retriever: Arc<FixedRetriever>, name: &str) -> Services {
        let mut services = Services::default();
        services.retrievers.register(name, retriever);
        services
    }

    async fn run(config: Value, state: State, services: Services) -> Result<NodeOutput> {
        let s = spec("rag", "retrieval", config);
        let node = build(&RetrievalFactory, &s);
        node.run(context(s, state, services).0).await
    }

    #[tokio::test]
    async fn queries_with_the_last_user_message_and_fills_context() {
        let retriever = Arc::new(FixedRetriever {
            chunks: vec![
                chunk("a", 0.9),
                chunk("b", 0.5),
                chunk("c", 0.4),
                chunk("d", 0.1),
            ],
            ..FixedRetriever::default()
        });
        let state = State::new(
            json!({}),
            vec![
                Message::user("first"),
                Message::assistant("x"),
                Message::user("what is rust?"),
            ],
        );
        let out = run(
            json!({"max_documents": 2, "similarity_threshold": 0.45, "output_variable": "docs"}),
            state,
            services(retriever.clone(), "documents"),
        )
        .await
        .unwrap();
        let query = retriever.queries.lock().unwrap()[0].clone();
        assert_eq!(
            query,
            RetrievalQuery {
                query: "what is rust?".into(),
                top_k: 2,
                score_threshold: 0.45,
                owner_id: None
            }
        );
        assert_eq!(
            out.delta.context,
            Some(vec![chunk("a", 0.9), chunk("b", 0.5)])
        );
        assert_eq!(
            out.delta.variables,
            vec![(
                "docs".to_owned(),
                VariableOp::Set(json!([
                    {"content": "a", "score": 0.9, "source": "doc:a", "metadata": null},
                    {"content": "b", "score": 0.5, "source": "doc:b", "metadata": null},
                ]))
            )]
        );
        assert_eq!(
            out.output,
            json!({"retriever": "documents", "query": "what is rust?", "count": 2})
        );
    }

    #[tokio::test]
    async fn query_template_and_named_retriever() {
        let retriever = Arc::new(FixedRetriever {
            chunks: vec![chunk("k", 0.3)],
            ..FixedRetriever::default()
        });
        let out = run(
            json!({"retriever": "kb", "query": "refund policy", "top_k": 10}),
            State::default(),
            services(retriever.clone(), "kb"),
        )
        .await
        .unwrap();
        assert_eq!(retriever.queries.lock().unwrap()[0].query, "refund policy");
        assert_eq!(retriever.queries.lock().unwrap()[0].top_k, 10);
        assert_eq!(out.delta.context, Some(vec![chunk("k", 0.3)]));
        assert!(out.delta.variables.is_empty());
    }

    #[tokio::test]
    async fn blank_query_empties_context_without_a_call() {
        let retriever = Arc::new(FixedRetriever {
            chunks: vec![chunk("k", 0.3)],
            ..FixedRetriever::default()
        });
        let out = run(
            json!({}),
            State::default(),
            services(retriever.clone(), "documents"),
        )
        .await
        .unwrap();
        assert!(retriever.queries.lock().unwrap().is_empty());
        assert_eq!(out.delta.context, Some(vec![]));
    }

    #[tokio::test]
    async fn unknown_retriever_is_not_found() {
        let retriever = Arc::new(FixedRetriever::default());
        let err = run(
            json!({"retriever": "web"}),
            State::new(json!({"message": "q"}), vec![]),
            services(retriever, "documents"),
        )
        .await
        .unwrap_err();
        assert_eq!(err.to_string(), "unknown retriever `web`");
    }

    #[test]
    fn bad_configs_are_refused() {
        let err = RetrievalFactory
            .build(&spec("rag", "retrieval", json!({"top_k": 101})))
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "configuration error: node `rag`: config `top_k` must be between 1 and 100, found 101"
        );
        let err = RetrievalFactory
            .build(&spec(
                "rag",
                "retrieval",
                json!({"similarity_threshold": 1.5}),
            ))
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "configuration error: node `rag`: config `similarity_threshold` must be between 0 and 1, found 1.5"
        );
    }
}
