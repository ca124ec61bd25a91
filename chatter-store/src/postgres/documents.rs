//! `documents`, `document_chunks` and `tsvector` search on Postgres.

use async_trait::async_trait;
use chatter_core::store::documents::normalise_score;
use chatter_core::store::{
    ChunkRecord, DocumentRecord, DocumentStatus, DocumentStore, NewDocument, Page, SearchHit,
    SearchQuery, StoreErrorKind, StoreResult, split_into_chunks,
};
use tokio_postgres::Row;

use super::{Pg, PostgresStore, col, enum_col};
use crate::common::{check_search, conflict, not_found, now_ms, object_or_empty, require};

fn document_row(row: &Row) -> StoreResult<DocumentRecord> {
    Ok(DocumentRecord {
        id: col(row, "id")?,
        owner_id: col(row, "owner_id")?,
        title: col(row, "title")?,
        source: col(row, "source")?,
        status: enum_col(row, "status", DocumentStatus::parse)?,
        metadata: col(row, "metadata")?,
        chunk_count: col(row, "chunk_count")?,
        char_count: col(row, "char_count")?,
        created_at: col(row, "created_at")?,
        updated_at: col(row, "updated_at")?,
    })
}

const COLUMNS: &str = "id, owner_id, title, source, status, metadata, chunk_count, char_count, created_at, updated_at";

#[async_trait]
impl DocumentStore for PostgresStore {
    async fn create_document(&self, new: NewDocument) -> StoreResult<DocumentRecord> {
        require("owner_id", &new.owner_id)?;
        require("title", &new.title)?;
        self.limits.text("document text", &new.text)?;
        self.limits.json("document metadata", &new.metadata)?;
        let chunks = split_into_chunks(&new.text, new.chunking)?;
        let id = self.ids.or_new(new.id)?;
        let char_count = new.text.chars().count() as i64;
        let mut client = self.client().await?;
        let tx = client.transaction().await.pg()?;
        let row = tx
            .query_one(
                &format!(
                    "INSERT INTO documents ({COLUMNS}) VALUES ($1, $2, $3, $4, 'ready', $5, $6, $7, $8, $8) RETURNING *"
                ),
                &[
                    &id,
                    &new.owner_id,
                    &new.title,
                    &new.source,
                    &object_or_empty(new.metadata),
                    &(chunks.len() as i64),
                    &char_count,
                    &now_ms(),
                ],
            )
            .await
            .pg()
            .map_err(|e| match e.store_kind() {
                Some(StoreErrorKind::Conflict) => conflict(format!("document `{id}` already exists")),
                _ => e,
            })?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO document_chunks (document_id, chunk_index, start_offset, content) VALUES ($1, $2, $3, $4)",
            )
            .await
            .pg()?;
        for chunk in &chunks {
            tx.execute(
                &insert,
                &[
                    &id,
                    &(chunk.index as i64),
                    &(chunk.start as i64),
                    &chunk.content,
                ],
            )
            .await
            .pg()?;
        }
        tx.commit().await.pg()?;
        document_row(&row)
    }

    async fn get_document(&self, id: &str) -> StoreResult<Option<DocumentRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!("SELECT {COLUMNS} FROM documents WHERE id = $1"),
                &[&id],
            )
            .await
            .pg()?;
        row.as_ref().map(document_row).transpose()
    }

    async fn list_documents(
        &self,
        owner_id: &str,
        status: Option<DocumentStatus>,
        page: Page,
    ) -> StoreResult<Vec<DocumentRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM documents WHERE owner_id = $1 AND ($2::text IS NULL OR status = $2)
                     ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
                ),
                &[&owner_id, &status.map(DocumentStatus::as_str), &page.sql_limit(), &page.sql_offset()],
            )
            .await
            .pg()?;
        rows.iter().map(document_row).collect()
    }

    async fn set_document_status(
        &self,
        id: &str,
        status: DocumentStatus,
    ) -> StoreResult<DocumentRecord> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                &format!(
                    "UPDATE documents SET status = $2, updated_at = GREATEST(updated_at, $3) WHERE id = $1 RETURNING {COLUMNS}"
                ),
                &[&id, &status.as_str(), &now_ms()],
            )
            .await
            .pg()?;
        match row {
            Some(row) => document_row(&row),
            None => Err(not_found("document", id)),
        }
    }

    async fn delete_document(&self, id: &str) -> StoreResult<bool> {
        let client = self.client().await?;
        Ok(client
            .execute("DELETE FROM documents WHERE id = $1", &[&id])
            .await
            .pg()?
            > 0)
    }

    async fn list_chunks(&self, document_id: &str) -> StoreResult<Vec<ChunkRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT document_id, chunk_index, start_offset, content FROM document_chunks
                 WHERE document_id = $1 ORDER BY chunk_index",
                &[&document_id],
            )
            .await
            .pg()?;
        rows.iter()
            .map(|row| {
                Ok(ChunkRecord {
                    document_id: col(row, "document_id")?,
                    chunk_index: col(row, "chunk_index")?,
                    start_offset: col(row, "start_offset")?,
                    content: col(row, "content")?,
                })
            })
            .collect()
    }

    async fn search_chunks(&self, query: &SearchQuery) -> StoreResult<Vec<SearchHit>> {
        let terms = check_search(query)?;
        if terms.is_empty() || query.max_documents == 0 {
            return Ok(Vec::new());
        }
        // Terms are alphanumeric only (`query_terms`); each is quoted and OR-ed, so no tsquery
        // syntax from the user is interpreted.
        let tsquery = terms
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(" | ");
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT c.document_id, d.title, c.chunk_index, c.content, d.metadata,
                        ts_rank_cd(c.content_tsv, q)::float8 AS relevance
                 FROM document_chunks c
                 JOIN documents d ON d.id = c.document_id,
                      to_tsquery('english', $1) q
                 WHERE c.content_tsv @@ q AND d.owner_id = $2 AND d.status = 'ready'
                 ORDER BY relevance DESC, c.document_id, c.chunk_index
                 LIMIT $3",
                &[
                    &tsquery,
                    &query.owner_id,
                    &Page::new(query.max_documents, 0).sql_limit(),
                ],
            )
            .await
            .pg()?;
        let hits = rows
            .iter()
            .map(|row| {
                Ok(SearchHit {
                    document_id: col(row, "document_id")?,
                    title: col(row, "title")?,
                    chunk_index: col(row, "chunk_index")?,
                    content: col(row, "content")?,
                    score: normalise_score(col(row, "relevance")?),
                    metadata: col(row, "metadata")?,
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        // Monotonic in the rank: filtering the top hits equals taking the top of the filtered.
        Ok(hits
            .into_iter()
            .filter(|h| h.score >= query.score_threshold)
            .collect())
    }
}
