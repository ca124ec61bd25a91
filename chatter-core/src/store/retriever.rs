//! [`StoreRetriever`]: the built-in full-text retriever over stored documents, for the
//! `retrieval` node.
//!
//! It asks [`DocumentStore::search_chunks`] (FTS5 on SQLite, `tsvector` on Postgres) for the
//! owner's best chunks and returns them as [`ContextChunk`]s: the chunk's text, its score
//! (0..=1), the document's title as `source`, and the document's metadata plus
//! `document_id`/`chunk_index`. Ingestion is [`DocumentStore::create_document`], which splits the
//! text into overlapping chunks ([`super::split_into_chunks`]).
//!
//! ```
//! # use std::sync::Arc;
//! # use chatter_core::RetrieverRegistry;
//! # use chatter_core::store::{DocumentStore, StoreRetriever};
//! # fn demo(store: Arc<dyn DocumentStore>) {
//! let mut retrievers = RetrieverRegistry::new();
//! retrievers.register("documents", Arc::new(StoreRetriever::new(store).default_owner("alice")));
//! # }
//! ```

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::{DocumentStore, SearchQuery, StoreErrorKind};
use crate::error::{Error, Result};
use crate::retriever::{ContextChunk, RetrievalQuery, Retriever};

/// A [`Retriever`] over a [`DocumentStore`]'s full-text search, scoped to one owner's
/// documents.
#[derive(Clone)]
pub struct StoreRetriever {
    store: Arc<dyn DocumentStore>,
    default_owner: Option<String>,
}

impl std::fmt::Debug for StoreRetriever {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreRetriever")
            .field("default_owner", &self.default_owner)
            .finish_non_exhaustive()
    }
}

impl StoreRetriever {
    /// A retriever over `store` (an `Arc<dyn Store>` coerces to it). Queries must name their
    /// owner unless [`StoreRetriever::default_owner`] is set.
    pub fn new(store: Arc<dyn DocumentStore>) -> StoreRetriever {
        StoreRetriever {
            store,
            default_owner: None,
        }
    }

    /// The owner whose documents are searched when a query names none (a single-user host, the
    /// command line).
    #[must_use]
    pub fn default_owner(mut self, owner: impl Into<String>) -> StoreRetriever {
        self.default_owner = Some(owner.into());
        self
    }
}

#[async_trait]
impl Retriever for StoreRetriever {
    async fn retrieve(&self, query: &RetrievalQuery) -> Result<Vec<ContextChunk>> {
        let owner = query
            .owner_id
            .as_ref()
            .or(self.default_owner.as_ref())
            .ok_or_else(|| {
                Error::store(
                    StoreErrorKind::InvalidInput,
                    "the document retriever is owner-scoped: the query names no owner and no default owner is set",
                )
            })?;
        if query.top_k == 0 {
            return Ok(Vec::new());
        }
        let hits = self
            .store
            .search_chunks(&SearchQuery {
                owner_id: owner.clone(),
                query: query.query.clone(),
                max_documents: u32::try_from(query.top_k).unwrap_or(u32::MAX),
                score_threshold: query.score_threshold,
            })
            .await?;
        Ok(hits
            .into_iter()
            .filter(|hit| hit.score >= query.score_threshold)
            .take(query.top_k)
            .map(|hit| {
                let mut metadata = match hit.metadata {
                    Value::Object(map) => map,
                    Value::Null => serde_json::Map::new(),
                    other => {
                        let mut map = serde_json::Map::new();
                        map.insert("document_metadata".into(), other);
                        map
                    }
                };
                metadata.insert("document_id".into(), Value::String(hit.document_id.clone()));
                metadata.insert("chunk_index".into(), Value::from(hit.chunk_index));
                let source = if hit.title.is_empty() {
                    hit.document_id
                } else {
                    hit.title
                };
                ContextChunk {
                    content: hit.content,
                    score: hit.score,
                    source,
                    metadata: Value::Object(metadata),
                }
            })
            .collect())
    }
}
