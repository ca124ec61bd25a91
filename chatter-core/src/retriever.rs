//! Retrievers: the [`Retriever`] trait behind the `retrieval` node, and the registry.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Result;

/// What the `retrieval` node asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrievalQuery {
    /// The query text.
    pub query: String,
    /// At most this many chunks.
    pub top_k: usize,
    /// Chunks scoring below this (0..1) are dropped.
    pub score_threshold: f64,
    /// Restrict to documents of this owner, when the retriever is owner-scoped.
    pub owner_id: Option<String>,
}

/// One retrieved piece of context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContextChunk {
    /// The text.
    pub content: String,
    /// Relevance, 0..1, higher is better.
    pub score: f64,
    /// Where it came from (document id, title or URL).
    pub source: String,
    /// Anything else the retriever knows.
    #[serde(default)]
    pub metadata: Value,
}

/// A source of context for the `retrieval` node.
#[async_trait]
pub trait Retriever: Send + Sync {
    /// Ranked chunks for the query, best first, at most `top_k`, none below the threshold.
    ///
    /// # Errors
    ///
    /// Any error of the underlying store or service.
    async fn retrieve(&self, query: &RetrievalQuery) -> Result<Vec<ContextChunk>>;
}

/// Retrievers by name.
#[derive(Clone, Default)]
pub struct RetrieverRegistry {
    retrievers: BTreeMap<String, Arc<dyn Retriever>>,
}

impl std::fmt::Debug for RetrieverRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.retrievers.keys()).finish()
    }
}

impl RetrieverRegistry {
    /// An empty registry.
    pub fn new() -> RetrieverRegistry {
        RetrieverRegistry::default()
    }

    /// Registers a retriever under `name`.
    pub fn register(&mut self, name: impl Into<String>, retriever: Arc<dyn Retriever>) {
        self.retrievers.insert(name.into(), retriever);
    }

    /// The retriever named `name`.
    ///
    /// # Errors
    ///
    /// [`crate::Error::NotFound`] for an unknown name.
    pub fn get(&self, name: &str) -> Result<Arc<dyn Retriever>> {
        self.retrievers
            .get(name)
            .cloned()
            .ok_or_else(|| crate::model::not_found("retriever", name))
    }

    /// Names of every retriever.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.retrievers.keys().map(String::as_str)
    }
}
