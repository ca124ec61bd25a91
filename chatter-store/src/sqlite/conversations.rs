//! `conversations` and `messages` on SQLite.

use async_trait::async_trait;
use chatter_core::orchestration::round_nano;
use chatter_core::store::{
    ConversationRecord, ConversationStatus, ConversationStore, ConversationUpdate,
    ConversationUsage, MessageRecord, MessageRole, NewConversation, NewMessage, Page,
    StoreErrorKind, StoreResult,
};
use rusqlite::params;

use super::{Db, SqliteStore, enum_at, json_at, query_all, query_opt};
use crate::common::{conflict, not_found, now_ms, object_or_empty, require, to_json_text};

const COLUMNS: &str = "id, user_id, title, status, metadata, message_count, created_at, updated_at";

fn conversation_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ConversationRecord> {
    Ok(ConversationRecord {
        id: row.get("id")?,
        user_id: row.get("user_id")?,
        title: row.get("title")?,
        status: enum_at(row, "status", ConversationStatus::parse)?,
        metadata: json_at(row, "metadata")?,
        message_count: row.get("message_count")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
    })
}

fn message_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<MessageRecord> {
    Ok(MessageRecord {
        id: row.get("id")?,
        conversation_id: row.get("conversation_id")?,
        seq: row.get("seq")?,
        role: enum_at(row, "role", MessageRole::parse)?,
        content: row.get("content")?,
        metadata: json_at(row, "metadata")?,
        token_count: row.get("token_count")?,
        execution_id: row.get("execution_id")?,
        created_at: row.get("created_at")?,
    })
}

#[async_trait]
impl ConversationStore for SqliteStore {
    async fn create_conversation(&self, new: NewConversation) -> StoreResult<ConversationRecord> {
        require("user_id", &new.user_id)?;
        self.limits.json("metadata", &new.metadata)?;
        self.limits.opt_text("title", new.title.as_deref())?;
        let id = self.ids.or_new(new.id)?;
        let now = now_ms();
        self.write(move |conn| {
            conn.prepare_cached(&format!(
                "INSERT INTO conversations (id, user_id, title, status, metadata, message_count, created_at, updated_at)
                 VALUES (?1, ?2, ?3, 'active', ?4, 0, ?5, ?5) RETURNING {COLUMNS}"
            ))
            .db()?
            .query_row(
                params![id, new.user_id, new.title, to_json_text(&object_or_empty(new.metadata)), now],
                conversation_row,
            )
            .db()
            .map_err(|e| match e.store_kind() {
                Some(StoreErrorKind::Conflict) => conflict(format!("conversation `{id}` already exists")),
                _ => e,
            })
        })
        .await
    }

    async fn get_conversation(&self, id: &str) -> StoreResult<Option<ConversationRecord>> {
        let key = id.to_owned();
        self.read(move |conn| {
            query_opt(
                conn,
                &format!("SELECT {COLUMNS} FROM conversations WHERE id = ?1"),
                [key],
                conversation_row,
            )
        })
        .await
    }

    async fn list_conversations(
        &self,
        user_id: &str,
        status: Option<ConversationStatus>,
        page: Page,
    ) -> StoreResult<Vec<ConversationRecord>> {
        let user = user_id.to_owned();
        self.read(move |conn| {
            query_all(
                conn,
                &format!(
                    "SELECT {COLUMNS} FROM conversations WHERE user_id = ?1 AND (?2 IS NULL OR status = ?2)
                     ORDER BY created_at DESC, id DESC LIMIT ?3 OFFSET ?4"
                ),
                params![user, status.map(ConversationStatus::as_str), page.sql_limit(), page.sql_offset()],
                conversation_row,
            )
        })
        .await
    }

    async fn update_conversation(
        &self,
        id: &str,
        update: ConversationUpdate,
    ) -> StoreResult<ConversationRecord> {
        self.limits.opt_json("metadata", update.metadata.as_ref())?;
        let key = id.to_owned();
        self.write(move |conn| {
            let (set_title, title) = match update.title {
                Some(t) => (true, t),
                None => (false, None),
            };
            let updated = query_opt(
                conn,
                &format!(
                    "UPDATE conversations SET
                         title = CASE WHEN ?2 THEN ?3 ELSE title END,
                         status = COALESCE(?4, status),
                         metadata = COALESCE(?5, metadata),
                         updated_at = MAX(updated_at, ?6)
                     WHERE id = ?1 RETURNING {COLUMNS}"
                ),
                params![
                    key,
                    set_title,
                    title,
                    update.status.map(ConversationStatus::as_str),
                    update.metadata.as_ref().map(to_json_text),
                    now_ms()
                ],
                conversation_row,
            )?;
            updated.ok_or_else(|| not_found("conversation", &key))
        })
        .await
    }

    async fn delete_conversation(&self, id: &str) -> StoreResult<bool> {
        let key = id.to_owned();
        let deleted = self
            .write(move |conn| {
                conn.execute("DELETE FROM conversations WHERE id = ?1", [key])
                    .db()
            })
            .await?;
        Ok(deleted > 0)
    }

    async fn add_message(&self, new: NewMessage) -> StoreResult<MessageRecord> {
        self.limits.text("message content", &new.content)?;
        self.limits.json("message metadata", &new.metadata)?;
        let id = self.ids.next();
        let now = now_ms();
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).db()?;
            let seq: Option<i64> = query_opt(
                &tx,
                "UPDATE conversations SET message_count = message_count + 1, updated_at = MAX(updated_at, ?2)
                 WHERE id = ?1 RETURNING message_count",
                params![new.conversation_id, now],
                |row| row.get(0),
            )?;
            let Some(seq) = seq else {
                return Err(not_found("conversation", &new.conversation_id));
            };
            let record = tx
                .prepare_cached(
                    "INSERT INTO messages (id, conversation_id, seq, role, content, metadata, token_count, execution_id, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) RETURNING *",
                )
                .db()?
                .query_row(
                    params![
                        id,
                        new.conversation_id,
                        seq,
                        new.role.as_str(),
                        new.content,
                        to_json_text(&object_or_empty(new.metadata)),
                        new.token_count,
                        new.execution_id,
                        now
                    ],
                    message_row,
                )
                .db()?;
            tx.commit().db()?;
            Ok(record)
        })
        .await
    }

    async fn list_messages(
        &self,
        conversation_id: &str,
        page: Page,
    ) -> StoreResult<Vec<MessageRecord>> {
        let key = conversation_id.to_owned();
        self.read(move |conn| {
            query_all(
                conn,
                "SELECT * FROM messages WHERE conversation_id = ?1 ORDER BY seq LIMIT ?2 OFFSET ?3",
                params![key, page.sql_limit(), page.sql_offset()],
                message_row,
            )
        })
        .await
    }

    async fn conversation_usage(&self, conversation_id: &str) -> StoreResult<ConversationUsage> {
        let key = conversation_id.to_owned();
        self.read(move |conn| {
            let usage = query_opt(conn, crate::common::CONVERSATION_USAGE_SQL, [&key], |row| {
                Ok(ConversationUsage {
                    conversation_id: key.clone(),
                    executions: row.get(0)?,
                    prompt_tokens: row.get(1)?,
                    completion_tokens: row.get(2)?,
                    total_tokens: row.get(3)?,
                    cost: round_nano(row.get(4)?),
                })
            })?;
            usage.ok_or_else(|| not_found("conversation", &key))
        })
        .await
    }
}
