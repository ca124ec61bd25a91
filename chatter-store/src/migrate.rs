//! Schema migrations: numbered SQL files per backend under `migrations/{sqlite,postgres}/`,
//! embedded at compile time and recorded in `schema_migrations` with their SHA-256 checksum.
//!
//! A backend runs [`plan`] under a lock (an exclusive transaction on SQLite,
//! `pg_advisory_xact_lock` on Postgres): every applied migration must still be embedded with the
//! same checksum, and none may be missing before the last applied one; otherwise the store
//! refuses to start with a [`StoreErrorKind::Migration`] error naming the migration.

use chatter_core::Error;
use chatter_core::store::{StoreErrorKind, StoreResult};
use sha2::{Digest, Sha256};

/// One embedded migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    /// Its number (from the file name).
    pub version: i64,
    /// Its name (the file name without number and extension).
    pub name: &'static str,
    /// The SQL.
    pub sql: &'static str,
}

impl Migration {
    /// SHA-256 of the SQL, lower-case hex.
    #[must_use]
    pub fn checksum(&self) -> String {
        checksum(self.sql)
    }
}

/// A row of `schema_migrations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    /// Its number.
    pub version: i64,
    /// Its name.
    pub name: String,
    /// The checksum recorded when it was applied.
    pub checksum: String,
}

/// SHA-256 of `text`, lower-case hex.
#[must_use]
pub fn checksum(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    let mut out = String::with_capacity(64);
    for byte in digest {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// The SQLite migrations.
pub const SQLITE_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "core",
        sql: include_str!("../migrations/sqlite/0001_core.sql"),
    },
    Migration {
        version: 2,
        name: "auth_audit_jobs",
        sql: include_str!("../migrations/sqlite/0002_auth_audit_jobs.sql"),
    },
    Migration {
        version: 3,
        name: "durability",
        sql: include_str!("../migrations/sqlite/0003_durability.sql"),
    },
    Migration {
        version: 4,
        name: "model_registry",
        sql: include_str!("../migrations/sqlite/0004_model_registry.sql"),
    },
    Migration {
        version: 5,
        name: "templates_marketplace",
        sql: include_str!("../migrations/sqlite/0005_templates_marketplace.sql"),
    },
    Migration {
        version: 6,
        name: "http_auth",
        sql: include_str!("../migrations/sqlite/0006_http_auth.sql"),
    },
    Migration {
        version: 7,
        name: "jobs_ops",
        sql: include_str!("../migrations/sqlite/0007_jobs_ops.sql"),
    },
    Migration {
        version: 8,
        name: "compact_steps",
        sql: include_str!("../migrations/sqlite/0008_compact_steps.sql"),
    },
    Migration {
        version: 9,
        name: "lean_execution_indexes",
        sql: include_str!("../migrations/sqlite/0009_lean_execution_indexes.sql"),
    },
    Migration {
        version: 10,
        name: "fold_completed",
        sql: include_str!("../migrations/sqlite/0010_fold_completed.sql"),
    },
    Migration {
        version: 11,
        name: "fold_deltas",
        sql: include_str!("../migrations/sqlite/0011_fold_deltas.sql"),
    },
    Migration {
        version: 12,
        name: "node_runs_by_iteration",
        sql: include_str!("../migrations/sqlite/0012_node_runs_by_iteration.sql"),
    },
    Migration {
        version: 13,
        name: "execution_checks_as_comparisons",
        sql: include_str!("../migrations/sqlite/0013_execution_checks_as_comparisons.sql"),
    },
];

/// The Postgres migrations.
pub const POSTGRES_MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "core",
        sql: include_str!("../migrations/postgres/0001_core.sql"),
    },
    Migration {
        version: 2,
        name: "auth_audit_jobs",
        sql: include_str!("../migrations/postgres/0002_auth_audit_jobs.sql"),
    },
    Migration {
        version: 3,
        name: "durability",
        sql: include_str!("../migrations/postgres/0003_durability.sql"),
    },
    Migration {
        version: 4,
        name: "model_registry",
        sql: include_str!("../migrations/postgres/0004_model_registry.sql"),
    },
    Migration {
        version: 5,
        name: "templates_marketplace",
        sql: include_str!("../migrations/postgres/0005_templates_marketplace.sql"),
    },
    Migration {
        version: 6,
        name: "http_auth",
        sql: include_str!("../migrations/postgres/0006_http_auth.sql"),
    },
    Migration {
        version: 7,
        name: "jobs_ops",
        sql: include_str!("../migrations/postgres/0007_jobs_ops.sql"),
    },
    Migration {
        version: 8,
        name: "compact_steps",
        sql: include_str!("../migrations/postgres/0008_compact_steps.sql"),
    },
    Migration {
        version: 9,
        name: "lean_execution_indexes",
        sql: include_str!("../migrations/postgres/0009_lean_execution_indexes.sql"),
    },
    Migration {
        version: 10,
        name: "fold_completed",
        sql: include_str!("../migrations/postgres/0010_fold_completed.sql"),
    },
    Migration {
        version: 11,
        name: "fold_deltas",
        sql: include_str!("../migrations/postgres/0011_fold_deltas.sql"),
    },
    Migration {
        version: 12,
        name: "node_runs_by_iteration",
        sql: include_str!("../migrations/postgres/0012_node_runs_by_iteration.sql"),
    },
    Migration {
        version: 13,
        name: "execution_checks_as_comparisons",
        sql: include_str!("../migrations/postgres/0013_execution_checks_as_comparisons.sql"),
    },
];

fn migration_error(message: String) -> Error {
    Error::store(StoreErrorKind::Migration, message)
}

/// Checks the applied migrations against the embedded ones and returns those still to apply,
/// in order.
///
/// # Errors
///
/// [`StoreErrorKind::Migration`] when an applied migration was changed (checksum differs), is
/// unknown to this build, or an embedded one is missing below the last applied one.
pub fn plan<'a>(
    embedded: &'a [Migration],
    applied: &[AppliedMigration],
) -> StoreResult<Vec<&'a Migration>> {
    let last_applied = applied.iter().map(|a| a.version).max().unwrap_or(0);
    for row in applied {
        let Some(known) = embedded.iter().find(|m| m.version == row.version) else {
            return Err(migration_error(format!(
                "the database has migration {:04}_{} which this build does not know; refusing to \
                 start (is the database used by a newer version?)",
                row.version, row.name
            )));
        };
        let expected = known.checksum();
        if row.checksum != expected {
            return Err(migration_error(format!(
                "migration {:04}_{} was changed after it was applied (checksum {} in the \
                 database, {} embedded); refusing to start",
                row.version, known.name, row.checksum, expected
            )));
        }
    }
    let mut pending = Vec::new();
    for migration in embedded {
        if applied.iter().any(|a| a.version == migration.version) {
            continue;
        }
        if migration.version < last_applied {
            return Err(migration_error(format!(
                "migration {:04}_{} is missing from schema_migrations although later migration \
                 {:04} was applied; refusing to start",
                migration.version, migration.name, last_applied
            )));
        }
        pending.push(migration);
    }
    Ok(pending)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(m: &Migration) -> AppliedMigration {
        AppliedMigration {
            version: m.version,
            name: m.name.to_owned(),
            checksum: m.checksum(),
        }
    }

    #[test]
    fn embedded_migrations_are_numbered_in_order() {
        // Numbers are reserved per work stream, so a build may lack one; they only have to
        // increase, from 1.
        for list in [SQLITE_MIGRATIONS, POSTGRES_MIGRATIONS] {
            assert_eq!(list.first().map(|m| m.version), Some(1));
            for pair in list.windows(2) {
                assert!(pair[0].version < pair[1].version, "{pair:?}");
            }
        }
        let names =
            |list: &[Migration]| list.iter().map(|m| (m.version, m.name)).collect::<Vec<_>>();
        assert_eq!(names(SQLITE_MIGRATIONS), names(POSTGRES_MIGRATIONS));
    }

    #[test]
    fn fresh_database_applies_everything() {
        let pending = plan(SQLITE_MIGRATIONS, &[]).unwrap();
        assert_eq!(pending.len(), SQLITE_MIGRATIONS.len());
        let done: Vec<_> = SQLITE_MIGRATIONS.iter().map(applied).collect();
        assert!(plan(SQLITE_MIGRATIONS, &done).unwrap().is_empty());
    }

    #[test]
    fn changed_missing_and_unknown_migrations_are_refused() {
        let mut done: Vec<_> = SQLITE_MIGRATIONS.iter().map(applied).collect();
        done[0].checksum = "0".repeat(64);
        let err = plan(SQLITE_MIGRATIONS, &done).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "storage error (migration): migration 0001_core was changed after it was applied"
            ),
            "{err}"
        );

        let done: Vec<_> = SQLITE_MIGRATIONS.iter().skip(1).map(applied).collect();
        let err = plan(SQLITE_MIGRATIONS, &done).unwrap_err().to_string();
        let last = SQLITE_MIGRATIONS.last().map_or(0, |m| m.version);
        assert!(
            err.contains(&format!(
                "migration 0001_core is missing from schema_migrations although later migration {last:04} was applied"
            )),
            "{err}"
        );

        let unknown = AppliedMigration {
            version: 99,
            name: "future".into(),
            checksum: "x".into(),
        };
        let err = plan(SQLITE_MIGRATIONS, &[unknown]).unwrap_err().to_string();
        assert!(
            err.contains("migration 0099_future which this build does not know"),
            "{err}"
        );
    }

    #[test]
    fn checksum_is_sha256_hex() {
        assert_eq!(
            checksum("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
