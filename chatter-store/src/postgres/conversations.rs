//! `conversations` and `messages` on Postgres.

use async_trait::async_trait;
use chatter_core::orchestration::round_nano;
use chatter_core::store::{
    ConversationRecord, ConversationStatus, ConversationStore, ConversationUpdate,
    ConversationUsage, MessageRecord, MessageRole, NewConversation, NewMessage, Page,
    StoreErrorKind, StoreResult,
};
use tokio_postgres::Row;

use super::{Pg, PostgresStore, col, enum_col};
use crate::common::{conflict, not_found, now_ms, object_or_empty, require};

fn conversation_row(row: &Row) -> StoreResult<ConversationRecord> {
    Ok(ConversationRecord {
        id: col(row, "id")?,
        user_id: col(row, "user_id")?,
        title: col(row, "title")?,
        status: enum_col(row, "status", ConversationStatus::parse)?,
        metadata: col(row, "metadata")?,
        message_count: col(row, "message_count")?,
        created_at: col(row, "created_at")?,
        updated_at: col(row, "updated_at")?,
    })
}

fn message_row(row: &Row) -> StoreResult<MessageRecord> {
    Ok(MessageRecord {
        id: col(row, "id")?,
        conversation_id: col(row, "conversation_id")?,
        seq: col(row, "seq")?,
        role: enum_col(row, "role", MessageRole::parse)?,
        content: col(row, "content")?,
        metadata: col(row, "metadata")?,
        token_count: col(row, "token_count")?,
        execution_id: col(row, "execution_id")?,
        created_at: col(row, "created_at")?,
    })
}

#[async_trait]
impl ConversationStore for PostgresStore {
    async fn create_conversation(&self, new: NewConversation) -> StoreResult<ConversationRecord> {
        require("user_id", &new.user_id)?;
        self.limits.json("metadata", &new.metadata)?;
        self.limits.opt_text("title", new.title.as_deref())?;
        let id = self.ids.or_new(new.id)?;
        let client = self.client().await?;
        let row = client
            .query_one(
                "INSERT INTO conversations (id, user_id, title, status, metadata, message_count, created_at, updated_at)
                 VALUES ($1, $2, $3, 'active', $4, 0, $5, $5) RETURNING *",
                &[&id, &new.user_id, &new.title, &object_or_empty(new.metadata), &now_ms()],
            )
            .await
            .pg()
            .map_err(|e| match e.store_kind() {
                Some(StoreErrorKind::Conflict) => conflict(format!("conversation `{id}` already exists")),
                _ => e,
            })?;
        conversation_row(&row)
    }

    async fn get_conversation(&self, id: &str) -> StoreResult<Option<ConversationRecord>> {
        let client = self.client().await?;
        let row = client
            .query_opt("SELECT * FROM conversations WHERE id = $1", &[&id])
            .await
            .pg()?;
        row.as_ref().map(conversation_row).transpose()
    }

    async fn list_conversations(
        &self,
        user_id: &str,
        status: Option<ConversationStatus>,
        page: Page,
    ) -> StoreResult<Vec<ConversationRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT * FROM conversations WHERE user_id = $1 AND ($2::text IS NULL OR status = $2)
                 ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4",
                &[&user_id, &status.map(ConversationStatus::as_str), &page.sql_limit(), &page.sql_offset()],
            )
            .await
            .pg()?;
        rows.iter().map(conversation_row).collect()
    }

    async fn update_conversation(
        &self,
        id: &str,
        update: ConversationUpdate,
    ) -> StoreResult<ConversationRecord> {
        self.limits.opt_json("metadata", update.metadata.as_ref())?;
        let (set_title, title) = match update.title {
            Some(t) => (true, t),
            None => (false, None),
        };
        let client = self.client().await?;
        let row = client
            .query_opt(
                "UPDATE conversations SET
                     title = CASE WHEN $2 THEN $3 ELSE title END,
                     status = COALESCE($4, status),
                     metadata = COALESCE($5, metadata),
                     updated_at = GREATEST(updated_at, $6)
                 WHERE id = $1 RETURNING *",
                &[
                    &id,
                    &set_title,
                    &title,
                    &update.status.map(ConversationStatus::as_str),
                    &update.metadata,
                    &now_ms(),
                ],
            )
            .await
            .pg()?;
        match row {
            Some(row) => conversation_row(&row),
            None => Err(not_found("conversation", id)),
        }
    }

    async fn delete_conversation(&self, id: &str) -> StoreResult<bool> {
        let client = self.client().await?;
        Ok(client
            .execute("DELETE FROM conversations WHERE id = $1", &[&id])
            .await
            .pg()?
            > 0)
    }

    async fn add_message(&self, new: NewMessage) -> StoreResult<MessageRecord> {
        self.limits.text("message content", &new.content)?;
        self.limits.json("message metadata", &new.metadata)?;
        let id = self.ids.next();
        let now = now_ms();
        let mut client = self.client().await?;
        let tx = client.transaction().await.pg()?;
        let seq = tx
            .query_opt(
                "UPDATE conversations SET message_count = message_count + 1, updated_at = GREATEST(updated_at, $2)
                 WHERE id = $1 RETURNING message_count",
                &[&new.conversation_id, &now],
            )
            .await
            .pg()?;
        let Some(seq) = seq else {
            return Err(not_found("conversation", &new.conversation_id));
        };
        let seq: i64 = col(&seq, "message_count")?;
        let row = tx
            .query_one(
                "INSERT INTO messages (id, conversation_id, seq, role, content, metadata, token_count, execution_id, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING *",
                &[
                    &id,
                    &new.conversation_id,
                    &seq,
                    &new.role.as_str(),
                    &new.content,
                    &object_or_empty(new.metadata),
                    &new.token_count,
                    &new.execution_id,
                    &now,
                ],
            )
            .await
            .pg()?;
        tx.commit().await.pg()?;
        message_row(&row)
    }

    async fn list_messages(
        &self,
        conversation_id: &str,
        page: Page,
    ) -> StoreResult<Vec<MessageRecord>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT * FROM messages WHERE conversation_id = $1 ORDER BY seq LIMIT $2 OFFSET $3",
                &[&conversation_id, &page.sql_limit(), &page.sql_offset()],
            )
            .await
            .pg()?;
        rows.iter().map(message_row).collect()
    }

    async fn conversation_usage(&self, conversation_id: &str) -> StoreResult<ConversationUsage> {
        let client = self.client().await?;
        let sql = crate::common::CONVERSATION_USAGE_SQL.replace("?1", "$1");
        let row = client
            .query_opt(sql.as_str(), &[&conversation_id])
            .await
            .pg()?
            .ok_or_else(|| not_found("conversation", conversation_id))?;
        Ok(ConversationUsage {
            conversation_id: conversation_id.to_owned(),
            executions: row.try_get(0).pg()?,
            prompt_tokens: row.try_get(1).pg()?,
            completion_tokens: row.try_get(2).pg()?,
            total_tokens: row.try_get(3).pg()?,
            cost: round_nano(row.try_get(4).pg()?),
        })
    }
}
