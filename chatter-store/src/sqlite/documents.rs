//! `documents`, `document_chunks` and the FTS5 index on SQLite.

use async_trait::async_trait;
use chatter_core::store::documents::normalise_score;
use chatter_core::store::{
    ChunkRecord, DocumentRecord, DocumentStatus, DocumentStore, NewDocument, Page, SearchHit,
    SearchQuery, StoreErrorKind, StoreResult, split_into_chunks,
};
use rusqlite::params;

use super::{Db, SqliteStore, enum_at, json_at, query_all, query_opt};
use crate::common::{
    check_search, conflict, not_found, now_ms, object_or_empty, require, to_json_text,
};

const COLUMNS: &str = "id, owner_id, title, source, status, metadata, chunk_count, char_count, created_at, updated_at";

fn document_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<DocumentRecord> {
    Ok(DocumentRecord {
        id: row.get("id")?,
        owner_id: row.get("owner_id")?,
        title: row.get("title")?,
        source: row.get("source")?,
        status: enum_at(row, "status", DocumentStatus::parse)?,
        metadata: json_at(row, "metadata")?,
        chunk_count: row.get("chunk_count")?,
        char_count: row.get("char_count")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
    })
}

#[async_trait]
impl DocumentStore for SqliteStore {
    async fn create_document(&self, new: NewDocument) -> StoreResult<DocumentRecord> {
        require("owner_id", &new.owner_id)?;
        require("title", &new.title)?;
        self.limits.text("document text", &new.text)?;
        self.limits.json("document metadata", &new.metadata)?;
        let chunks = split_into_chunks(&new.text, new.chunking)?;
        let id = self.ids.or_new(new.id)?;
        let now = now_ms();
        let char_count = new.text.chars().count() as i64;
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).db()?;
            tx.prepare_cached(
                "INSERT INTO documents (id, owner_id, title, source, status, metadata, chunk_count, char_count, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, 'ready', ?5, ?6, ?7, ?8, ?8)",
            )
            .db()?
            .execute(params![
                id,
                new.owner_id,
                new.title,
                new.source,
                to_json_text(&object_or_empty(new.metadata)),
                chunks.len() as i64,
                char_count,
                now
            ])
            .db()
            .map_err(|e| match e.store_kind() {
                Some(StoreErrorKind::Conflict) => conflict(format!("document `{id}` already exists")),
                _ => e,
            })?;
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO document_chunks (document_id, chunk_index, start_offset, content) VALUES (?1, ?2, ?3, ?4)",
                    )
                    .db()?;
                for chunk in &chunks {
                    insert
                        .execute(params![id, chunk.index as i64, chunk.start as i64, chunk.content])
                        .db()?;
                }
            }
            let record = query_opt(&tx, &format!("SELECT {COLUMNS} FROM documents WHERE id = ?1"), [&id], document_row)?
                .ok_or_else(|| not_found("document", &id))?;
            tx.commit().db()?;
            Ok(record)
        })
        .await
    }

    async fn get_document(&self, id: &str) -> StoreResult<Option<DocumentRecord>> {
        let key = id.to_owned();
        self.read(move |conn| {
            query_opt(
                conn,
                &format!("SELECT {COLUMNS} FROM documents WHERE id = ?1"),
                [key],
                document_row,
            )
        })
        .await
    }

    async fn list_documents(
        &self,
        owner_id: &str,
        status: Option<DocumentStatus>,
        page: Page,
    ) -> StoreResult<Vec<DocumentRecord>> {
        let owner = owner_id.to_owned();
        self.read(move |conn| {
            query_all(
                conn,
                &format!(
                    "SELECT {COLUMNS} FROM documents WHERE owner_id = ?1 AND (?2 IS NULL OR status = ?2)
                     ORDER BY created_at DESC, id DESC LIMIT ?3 OFFSET ?4"
                ),
                params![owner, status.map(DocumentStatus::as_str), page.sql_limit(), page.sql_offset()],
                document_row,
            )
        })
        .await
    }

    async fn set_document_status(
        &self,
        id: &str,
        status: DocumentStatus,
    ) -> StoreResult<DocumentRecord> {
        let key = id.to_owned();
        self.write(move |conn| {
            query_opt(
                conn,
                &format!(
                    "UPDATE documents SET status = ?2, updated_at = MAX(updated_at, ?3) WHERE id = ?1 RETURNING {COLUMNS}"
                ),
                params![key, status.as_str(), now_ms()],
                document_row,
            )?
            .ok_or_else(|| not_found("document", &key))
        })
        .await
    }

    async fn delete_document(&self, id: &str) -> StoreResult<bool> {
        let key = id.to_owned();
        let deleted = self
            .write(move |conn| {
                conn.execute("DELETE FROM documents WHERE id = ?1", [key])
                    .db()
            })
            .await?;
        Ok(deleted > 0)
    }

    async fn list_chunks(&self, document_id: &str) -> StoreResult<Vec<ChunkRecord>> {
        let key = document_id.to_owned();
        self.read(move |conn| {
            query_all(
                conn,
                "SELECT document_id, chunk_index, start_offset, content FROM document_chunks
                 WHERE document_id = ?1 ORDER BY chunk_index",
                [key],
                |row| {
                    Ok(ChunkRecord {
                        document_id: row.get(0)?,
                        chunk_index: row.get(1)?,
                        start_offset: row.get(2)?,
                        content: row.get(3)?,
                    })
                },
            )
        })
        .await
    }

    async fn search_chunks(&self, query: &SearchQuery) -> StoreResult<Vec<SearchHit>> {
        let terms = check_search(query)?;
        if terms.is_empty() || query.max_documents == 0 {
            return Ok(Vec::new());
        }
        // Each term is quoted (an FTS5 string), so no query syntax from the user is interpreted;
        // OR ranks chunks matching more and rarer terms higher (bm25).
        let fts_query = terms
            .iter()
            .map(|t| format!("\"{}\"", t.replace('"', "\"\"")))
            .collect::<Vec<_>>()
            .join(" OR ");
        let owner = query.owner_id.clone();
        let limit = Page::new(query.max_documents, 0).sql_limit();
        let threshold = query.score_threshold;
        let hits = self
            .read(move |conn| {
                query_all(
                    conn,
                    "SELECT c.document_id, d.title, c.chunk_index, c.content, d.metadata,
                            -bm25(document_chunks_fts) AS relevance
                     FROM document_chunks_fts
                     JOIN document_chunks c ON c.id = document_chunks_fts.rowid
                     JOIN documents d ON d.id = c.document_id
                     WHERE document_chunks_fts MATCH ?1 AND d.owner_id = ?2 AND d.status = 'ready'
                     ORDER BY relevance DESC, c.document_id, c.chunk_index
                     LIMIT ?3",
                    params![fts_query, owner, limit],
                    |row| {
                        Ok(SearchHit {
                            document_id: row.get("document_id")?,
                            title: row.get("title")?,
                            chunk_index: row.get("chunk_index")?,
                            content: row.get("content")?,
                            score: normalise_score(row.get("relevance")?),
                            metadata: json_at(row, "metadata")?,
                        })
                    },
                )
            })
            .await?;
        // The score is monotonic in the rank, so filtering the top hits equals taking the top of
        // the filtered hits.
        Ok(hits.into_iter().filter(|h| h.score >= threshold).collect())
    }
}
