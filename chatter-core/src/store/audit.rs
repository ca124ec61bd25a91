//! The append-only audit log (`audit_logs`). Both backends refuse UPDATE and DELETE on it with
//! a trigger.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Page, StoreResult};

/// A stored audit entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Increasing id.
    pub id: i64,
    /// Time (ms).
    pub ts: i64,
    /// Who acted (user id), if known.
    pub actor_id: Option<String>,
    /// What was done (`workflow.create`, `execution.cancel`, ...).
    pub action: String,
    /// Kind of the thing acted on.
    pub resource_type: String,
    /// Its id.
    pub resource_id: Option<String>,
    /// `success`, `denied`, `error`, ...
    pub outcome: String,
    /// Client address.
    pub ip_address: Option<String>,
    /// Details.
    pub details: Value,
}

/// What [`AuditStore::append_audit`] needs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct NewAuditEntry {
    /// Time (ms).
    pub ts: i64,
    /// Who acted.
    pub actor_id: Option<String>,
    /// What was done (not empty).
    pub action: String,
    /// Kind of the thing acted on (not empty).
    pub resource_type: String,
    /// Its id.
    pub resource_id: Option<String>,
    /// Outcome (not empty).
    pub outcome: String,
    /// Client address.
    pub ip_address: Option<String>,
    /// Details (`null` → `{}`).
    pub details: Value,
}

/// Which entries [`AuditStore::list_audit`] returns; fields combine with AND.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AuditFilter {
    /// Actor.
    pub actor_id: Option<String>,
    /// Resource kind.
    pub resource_type: Option<String>,
    /// Resource id.
    pub resource_id: Option<String>,
    /// At or after (ms).
    pub since: Option<i64>,
}

/// The audit log.
#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Appends an entry.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for an empty action/resource type/outcome, `PayloadTooLarge`.
    async fn append_audit(&self, entry: NewAuditEntry) -> StoreResult<AuditRecord>;

    /// Entries, newest first (id desc).
    ///
    /// # Errors
    ///
    /// Database failures.
    async fn list_audit(&self, filter: &AuditFilter, page: Page) -> StoreResult<Vec<AuditRecord>>;
}
