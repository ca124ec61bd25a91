//! Helpers shared by the integration tests of this crate (`mod support;`): Postgres schemas,
//! temporary directories and the reference sample documents.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use chatter_core::store::{ChunkingOptions, DocumentRecord, NewDocument, Store};
use serde_json::Value;

/// `CHATTER_TEST_POSTGRES_URL`, when set and not empty.
pub fn postgres_url() -> Option<String> {
    std::env::var("CHATTER_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// A fresh Postgres schema name for one test.
pub fn new_schema() -> String {
    format!(
        "chatter_test_{}",
        ulid::Ulid::new().to_string().to_lowercase()
    )
}

/// Drops a test's schema.
pub async fn drop_schema(url: &str, schema: &str) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let task = tokio::spawn(connection);
    client
        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .await
        .unwrap();
    drop(client);
    let _ = task.await;
}

/// A new empty directory under the system's temporary directory.
pub fn temp_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The `(title, content)` of `examples/data/sample-data.json`'s sample documents.
pub fn sample_documents() -> Vec<(String, String)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/data/sample-data.json"
    );
    let data: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    data["sample_documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["title"].as_str().unwrap().to_owned(),
                d["content"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Stores the sample documents for `owner` (chunks of 400 characters, 80 overlapping).
pub async fn ingest_samples(s: &Arc<dyn Store>, owner: &str) -> Vec<DocumentRecord> {
    let mut records = Vec::new();
    for (title, text) in sample_documents() {
        records.push(
            s.create_document(NewDocument {
                owner_id: owner.into(),
                title,
                text,
                chunking: ChunkingOptions {
                    chunk_size: 400,
                    overlap: 80,
                },
                ..NewDocument::default()
            })
            .await
            .unwrap(),
        );
    }
    records
}

/// A store on a fresh Postgres schema (`options` with that schema and `pool_size`), with the
/// URL and the schema to drop afterwards; `None` (after saying so) when
/// `CHATTER_TEST_POSTGRES_URL` is not set.
pub async fn postgres_store(
    mut options: chatter_store::StoreOptions,
    pool_size: usize,
) -> Option<(Arc<dyn Store>, String, String)> {
    let Some(url) = postgres_url() else {
        println!("skipped: CHATTER_TEST_POSTGRES_URL not set");
        return None;
    };
    let schema = new_schema();
    options.pg_schema = Some(schema.clone());
    options.pg_pool_size = pool_size;
    let store = chatter_store::connect_with(&url, options)
        .await
        .expect("CHATTER_TEST_POSTGRES_URL is set but Postgres is not usable");
    assert_eq!(store.backend(), "postgres");
    Some((store, url, schema))
}

/// An execution's node runs as (node id, step), in the store's order.
pub async fn node_steps(s: &Arc<dyn Store>, execution_id: &str) -> Vec<(String, Option<i64>)> {
    s.list_node_runs(execution_id)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.node_id, r.step))
        .collect()
}
