//! Documents (`documents`), their chunks (`document_chunks`) and full-text search.
//!
//! Ingestion splits the text into overlapping chunks with [`split_into_chunks`]; search is
//! owner-scoped, ranked, and returns scores normalised to `0..=1` (higher is better): each
//! backend maps its raw relevance `r ≥ 0` (SQLite FTS5: `-bm25()`; Postgres: `ts_rank_cd`) to
//! `r / (1 + r)`. The scale differs between backends; the order and the `0..=1` range do not.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Page, StoreResult, string_enum};

string_enum! {
    /// Processing status of a document.
    DocumentStatus {
        /// Stored, not yet indexed.
        Pending => "pending",
        /// Being indexed.
        Processing => "processing",
        /// Indexed and searchable.
        Ready => "ready",
        /// Indexing failed.
        Failed => "failed",
    }
}

/// A stored document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocumentRecord {
    /// ULID.
    pub id: String,
    /// The owning user.
    pub owner_id: String,
    /// Title.
    pub title: String,
    /// Where it came from (file name, URL).
    pub source: Option<String>,
    /// Status.
    pub status: DocumentStatus,
    /// Free metadata.
    pub metadata: Value,
    /// Number of chunks.
    pub chunk_count: i64,
    /// Length of the text in characters.
    pub char_count: i64,
    /// Creation time (ms).
    pub created_at: i64,
    /// Last update time (ms).
    pub updated_at: i64,
}

/// Chunk size and overlap, in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkingOptions {
    /// Target chunk length (≥ 1).
    pub chunk_size: usize,
    /// Characters shared by consecutive chunks (< `chunk_size`).
    pub overlap: usize,
}

impl Default for ChunkingOptions {
    fn default() -> Self {
        ChunkingOptions {
            chunk_size: 1000,
            overlap: 200,
        }
    }
}

/// What [`DocumentStore::create_document`] needs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NewDocument {
    /// Id to use; a new ULID when `None`.
    pub id: Option<String>,
    /// The owning user.
    pub owner_id: String,
    /// Title.
    pub title: String,
    /// Origin.
    pub source: Option<String>,
    /// Metadata (`null` → `{}`).
    pub metadata: Value,
    /// The full text, split into chunks on ingestion.
    pub text: String,
    /// How to split it.
    pub chunking: ChunkingOptions,
}

/// A piece of a text produced by [`split_into_chunks`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextChunk {
    /// Position, from 0.
    pub index: usize,
    /// Offset of the first character (in characters).
    pub start: usize,
    /// The text.
    pub content: String,
}

/// A stored chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRecord {
    /// The document.
    pub document_id: String,
    /// Position, from 0.
    pub chunk_index: i64,
    /// Offset of the first character in the document.
    pub start_offset: i64,
    /// The text.
    pub content: String,
}

/// A full-text query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchQuery {
    /// Only this owner's documents.
    pub owner_id: String,
    /// Words to look for (any of them; more matches rank higher). Punctuation is ignored.
    pub query: String,
    /// At most this many hits (the retrieval node's `top_k` / `max_documents`).
    pub max_documents: u32,
    /// Hits scoring below this (0..=1) are dropped.
    pub score_threshold: f64,
}

/// A ranked chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchHit {
    /// The document.
    pub document_id: String,
    /// Its title (the hit's `source` for the retrieval node).
    pub title: String,
    /// The chunk's position.
    pub chunk_index: i64,
    /// The chunk's text.
    pub content: String,
    /// Relevance in 0..=1, higher is better (see the module docs).
    pub score: f64,
    /// The document's metadata.
    pub metadata: Value,
}

/// Splits `text` into chunks of at most `chunk_size` characters, consecutive chunks sharing
/// `overlap` characters. A chunk ends at the last whitespace within its window when there is one
/// in its second half, so words are not cut. An empty text gives no chunk.
///
/// # Errors
///
/// `InvalidInput` when `chunk_size` is 0 or `overlap >= chunk_size`.
pub fn split_into_chunks(text: &str, options: ChunkingOptions) -> StoreResult<Vec<TextChunk>> {
    let ChunkingOptions {
        chunk_size,
        overlap,
    } = options;
    if chunk_size == 0 || overlap >= chunk_size {
        return Err(crate::Error::store(
            super::StoreErrorKind::InvalidInput,
            format!(
                "chunking needs chunk_size >= 1 and overlap < chunk_size (got {chunk_size} and {overlap})"
            ),
        ));
    }
    let chars: Vec<char> = text.chars().collect();
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < chars.len() {
        let window_end = (start + chunk_size).min(chars.len());
        let mut end = window_end;
        if window_end < chars.len() {
            let half = start + chunk_size / 2;
            if let Some(pos) = (half.max(start + overlap + 1)..window_end)
                .rev()
                .find(|&i| chars[i].is_whitespace())
            {
                end = pos;
            }
        }
        chunks.push(TextChunk {
            index: chunks.len(),
            start,
            content: chars[start..end].iter().collect(),
        });
        if end >= chars.len() {
            break;
        }
        // `end > start + overlap` holds, so this always advances.
        start = end - overlap;
    }
    Ok(chunks)
}

/// Storage of documents and the built-in full-text retriever.
#[async_trait]
pub trait DocumentStore: Send + Sync {
    /// Stores a document and its chunks in one transaction; status `ready`.
    ///
    /// # Errors
    ///
    /// `InvalidInput` (empty owner/title, bad chunking), `PayloadTooLarge`.
    async fn create_document(&self, new: NewDocument) -> StoreResult<DocumentRecord>;

    /// Reads a document.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn get_document(&self, id: &str) -> StoreResult<Option<DocumentRecord>>;

    /// An owner's documents, newest first, optionally of one status.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn list_documents(
        &self,
        owner_id: &str,
        status: Option<DocumentStatus>,
        page: Page,
    ) -> StoreResult<Vec<DocumentRecord>>;

    /// Sets a document's status.
    ///
    /// # Errors
    ///
    /// `NotFound`.
    async fn set_document_status(
        &self,
        id: &str,
        status: DocumentStatus,
    ) -> StoreResult<DocumentRecord>;

    /// Deletes a document and its chunks; returns whether it existed.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn delete_document(&self, id: &str) -> StoreResult<bool>;

    /// A document's chunks in order.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn list_chunks(&self, document_id: &str) -> StoreResult<Vec<ChunkRecord>>;

    /// Full-text search over the owner's `ready` documents, best first (ties by document id and
    /// chunk index). A query with no word gives no hit.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a threshold outside 0..=1.
    async fn search_chunks(&self, query: &SearchQuery) -> StoreResult<Vec<SearchHit>>;
}

/// The words of a search query: maximal runs of alphanumeric characters, lower-cased, without
/// duplicates, at most 64. Backends build their full-text query from these only, so no query
/// syntax from the user reaches the database.
#[must_use]
pub fn query_terms(query: &str) -> Vec<String> {
    let mut terms: Vec<String> = Vec::new();
    for word in query.split(|c: char| !c.is_alphanumeric()) {
        if word.is_empty() {
            continue;
        }
        let word = word.to_lowercase();
        if !terms.contains(&word) {
            terms.push(word);
        }
        if terms.len() == 64 {
            break;
        }
    }
    terms
}

/// Maps a raw relevance `r ≥ 0` to `r / (1 + r)` in `0..1`.
#[must_use]
pub fn normalise_score(raw: f64) -> f64 {
    if raw.is_nan() || raw <= 0.0 {
        0.0
    } else {
        raw / (1.0 + raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(chunk_size: usize, overlap: usize) -> ChunkingOptions {
        ChunkingOptions {
            chunk_size,
            overlap,
        }
    }

    #[test]
    fn chunks_overlap_and_cover_the_text() {
        let chunks = split_into_chunks("abcdefghij", opts(4, 1)).unwrap();
        let texts: Vec<_> = chunks.iter().map(|c| c.content.as_str()).collect();
        assert_eq!(texts, ["abcd", "defg", "ghij"]);
        assert_eq!(chunks[1].start, 3);
        assert_eq!(chunks[2].index, 2);
    }

    #[test]
    fn chunks_prefer_word_boundaries() {
        let chunks = split_into_chunks("alpha beta gamma delta", opts(12, 3)).unwrap();
        let texts: Vec<_> = chunks.iter().map(|c| c.content.as_str()).collect();
        assert_eq!(texts, ["alpha beta", "eta gamma", "mma delta"]);
    }

    #[test]
    fn empty_text_and_bad_options() {
        assert!(split_into_chunks("", opts(4, 1)).unwrap().is_empty());
        let err = split_into_chunks("x", opts(4, 4)).unwrap_err();
        assert_eq!(
            err.store_kind(),
            Some(super::super::StoreErrorKind::InvalidInput)
        );
        assert!(split_into_chunks("x", opts(0, 0)).is_err());
    }

    #[test]
    fn multibyte_text_is_split_on_characters() {
        let chunks = split_into_chunks("ééééé", opts(2, 0)).unwrap();
        let texts: Vec<_> = chunks.iter().map(|c| c.content.as_str()).collect();
        assert_eq!(texts, ["éé", "éé", "é"]);
    }

    #[test]
    fn query_terms_strip_syntax() {
        assert_eq!(
            query_terms("Rust; DROP TABLE \"x\" -- rust* OR"),
            ["rust", "drop", "table", "x", "or"]
        );
        assert!(query_terms("  ?!  ").is_empty());
    }

    #[test]
    fn scores_are_normalised() {
        assert_eq!(normalise_score(0.0), 0.0);
        assert_eq!(normalise_score(-3.0), 0.0);
        assert_eq!(normalise_score(1.0), 0.5);
        assert!(normalise_score(1e9) < 1.0);
    }
}
