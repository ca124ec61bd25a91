//! Conversations (`conversations`) and their messages (`messages`).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Page, StoreResult, string_enum};

string_enum! {
    /// Status of a conversation.
    ConversationStatus {
        /// In use.
        Active => "active",
        /// Archived by its user.
        Archived => "archived",
        /// Soft-deleted.
        Deleted => "deleted",
    }
}

string_enum! {
    /// Author of a message.
    MessageRole {
        /// System prompt.
        System => "system",
        /// The user.
        User => "user",
        /// The model.
        Assistant => "assistant",
        /// A tool result.
        Tool => "tool",
    }
}

/// A stored conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationRecord {
    /// ULID.
    pub id: String,
    /// The owning user.
    pub user_id: String,
    /// Title.
    pub title: Option<String>,
    /// Status.
    pub status: ConversationStatus,
    /// Free metadata.
    pub metadata: Value,
    /// Number of messages.
    pub message_count: i64,
    /// Creation time (ms).
    pub created_at: i64,
    /// Last update time (ms).
    pub updated_at: i64,
}

/// What [`ConversationStore::create_conversation`] needs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NewConversation {
    /// Id to use; a new ULID when `None`.
    pub id: Option<String>,
    /// The owning user.
    pub user_id: String,
    /// Title.
    pub title: Option<String>,
    /// Free metadata (`null` → `{}`).
    pub metadata: Value,
}

/// A partial update.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ConversationUpdate {
    /// New title (`Some(None)` clears it).
    pub title: Option<Option<String>>,
    /// New status.
    pub status: Option<ConversationStatus>,
    /// New metadata.
    pub metadata: Option<Value>,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageRecord {
    /// ULID.
    pub id: String,
    /// The conversation.
    pub conversation_id: String,
    /// Position in the conversation, from 1.
    pub seq: i64,
    /// Author.
    pub role: MessageRole,
    /// Text.
    pub content: String,
    /// Tool calls, tool call id, name, ... as given.
    pub metadata: Value,
    /// Tokens, when known.
    pub token_count: Option<i64>,
    /// The execution that produced it.
    pub execution_id: Option<String>,
    /// Creation time (ms).
    pub created_at: i64,
}

/// What [`ConversationStore::add_message`] needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewMessage {
    /// The conversation.
    pub conversation_id: String,
    /// Author.
    pub role: MessageRole,
    /// Text.
    pub content: String,
    /// Metadata (`null` → `{}`).
    pub metadata: Value,
    /// Tokens, when known.
    pub token_count: Option<i64>,
    /// The execution that produced it.
    pub execution_id: Option<String>,
}

impl NewMessage {
    /// A message of `role` with `content` in `conversation_id`.
    pub fn new(
        conversation_id: impl Into<String>,
        role: MessageRole,
        content: impl Into<String>,
    ) -> Self {
        NewMessage {
            conversation_id: conversation_id.into(),
            role,
            content: content.into(),
            metadata: Value::Null,
            token_count: None,
            execution_id: None,
        }
    }
}

/// Tokens and cost summed over the executions of a conversation (their `conversation_id`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ConversationUsage {
    /// The conversation.
    pub conversation_id: String,
    /// Executions recorded in it.
    pub executions: i64,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Completion tokens.
    pub completion_tokens: i64,
    /// Total tokens.
    pub total_tokens: i64,
    /// Cost in US dollars, rounded to the nano-dollar.
    pub cost: f64,
}

/// Storage of conversations and messages.
#[async_trait]
pub trait ConversationStore: Send + Sync {
    /// Creates a conversation (`active`).
    ///
    /// # Errors
    ///
    /// `InvalidInput` for an empty user, `Conflict` for a duplicate id.
    async fn create_conversation(&self, new: NewConversation) -> StoreResult<ConversationRecord>;

    /// Reads a conversation.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn get_conversation(&self, id: &str) -> StoreResult<Option<ConversationRecord>>;

    /// A user's conversations, newest first (`created_at` desc, then id desc), optionally of one
    /// status.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn list_conversations(
        &self,
        user_id: &str,
        status: Option<ConversationStatus>,
        page: Page,
    ) -> StoreResult<Vec<ConversationRecord>>;

    /// Applies a partial update.
    ///
    /// # Errors
    ///
    /// `NotFound`.
    async fn update_conversation(
        &self,
        id: &str,
        update: ConversationUpdate,
    ) -> StoreResult<ConversationRecord>;

    /// Deletes a conversation and its messages; returns whether it existed.
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn delete_conversation(&self, id: &str) -> StoreResult<bool>;

    /// Appends a message (next `seq`).
    ///
    /// # Errors
    ///
    /// `NotFound` for an unknown conversation, `PayloadTooLarge`.
    async fn add_message(&self, new: NewMessage) -> StoreResult<MessageRecord>;

    /// Tokens and cost of a conversation: the sums over its executions, so they always agree
    /// with the execution rows (an execution's usage is written when it ends).
    ///
    /// # Errors
    ///
    /// `NotFound` for an unknown conversation.
    async fn conversation_usage(&self, conversation_id: &str) -> StoreResult<ConversationUsage>;

    /// Messages in order (`seq` ascending).
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn list_messages(
        &self,
        conversation_id: &str,
        page: Page,
    ) -> StoreResult<Vec<MessageRecord>>;
}
