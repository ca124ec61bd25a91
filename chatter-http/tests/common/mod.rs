//! Shared harness of the server tests: a server on 127.0.0.1:0 over a fresh SQLite or
//! Postgres store (own schema, dropped at the end), and a small JSON client over reqwest.

#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;

use chatter_core::store::Store;
use chatter_http::server::{Server, ServerConfig, auth};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use serde_json::Value;

pub const ADMIN_KEY: &str = "chatter_api_00000000000000000000000000000000admin";
pub const JWT_SECRET: &[u8] = b"test-secret-test-secret-test-secret";
pub const PASSWORD: &str = "correct horse battery";

pub struct Harness {
    pub server: Server,
    pub client: reqwest::Client,
}

/// A user of the tests with an API key.
#[derive(Clone, Debug)]
pub struct TestUser {
    pub id: String,
    pub username: String,
    pub key: String,
}

/// An answer: status, headers, JSON body (`Null` when empty or not JSON), raw text.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Answer {
    pub fn content_type(&self) -> &str {
        self.headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts a problem document with this status.
    pub fn assert_problem(&self, status: u16) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(
            self.content_type(),
            "application/problem+json",
            "{}",
            self.text
        );
        for key in ["type", "title", "status", "detail", "instance"] {
            assert!(
                self.body.get(key).is_some(),
                "problem without `{key}`: {}",
                self.text
            );
        }
        assert_eq!(self.body["status"], status);
    }
}

fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Harness {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base_url())
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        self.server.store()
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.client.request(method, self.url(path));
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(body).unwrap());
        }
        answer(request.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Answer {
        self.send("GET", path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> Answer {
        self.send("POST", path, token, Some(body)).await
    }

    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: Vec<u8>,
    ) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .client
            .request(method, self.url(path))
            .header(CONTENT_TYPE, content_type)
            .body(body);
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        answer(request.send().await.unwrap()).await
    }

    /// Creates a user with a password and an API key.
    pub async fn user(&self, username: &str, roles: &[&str]) -> TestUser {
        let user = auth::create_user(
            self.store(),
            &format!("{username}@example.com"),
            username,
            Some(PASSWORD),
            roles.iter().map(|r| (*r).to_owned()).collect(),
        )
        .await
        .unwrap();
        let (_, key) = auth::create_api_key(self.store(), &user.id, "test", None)
            .await
            .unwrap();
        TestUser {
            id: user.id,
            username: username.to_owned(),
            key,
        }
    }

    /// The audit rows with this action, oldest first.
    pub async fn audit(&self, action: &str) -> Vec<chatter_core::store::AuditRecord> {
        let mut rows = self
            .store()
            .list_audit(
                &chatter_core::store::AuditFilter::default(),
                chatter_core::store::Page::new(10_000, 0),
            )
            .await
            .unwrap();
        rows.retain(|r| r.action == action);
        rows.reverse();
        rows
    }
}

pub async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
        text,
    }
}

pub fn config() -> ServerConfig {
    let mut config = ServerConfig::new("unused");
    config.admin_api_key = Some(ADMIN_KEY.to_owned());
    config.jwt_secret = Some(JWT_SECRET.to_vec());
    config.max_body_bytes = 64 * 1024;
    // Suites that send many requests as one user must not meet the default limits;
    // `server_ops` tests the limits with its own.
    config.rate_limits.enabled = false;
    config
}

async fn start(store: Arc<dyn Store>, config: ServerConfig) -> Harness {
    install_crypto();
    let server = Server::start_with_store(config, store).await.unwrap();
    assert_eq!(server.initial_admin_key(), Some(ADMIN_KEY));
    Harness {
        server,
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
    }
}

pub async fn run_sqlite<F, Fut>(case: F)
where
    F: FnOnce(Harness) -> Fut,
    Fut: Future<Output = ()>,
{
    run_sqlite_with(config(), case).await;
}

pub async fn run_sqlite_with<F, Fut>(config: ServerConfig, case: F)
where
    F: FnOnce(Harness) -> Fut,
    Fut: Future<Output = ()>,
{
    let store = chatter_store::connect("sqlite::memory:").await.unwrap();
    case(start(store, config).await).await;
}

pub fn postgres_url() -> Option<String> {
    std::env::var("CHATTER_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

async fn drop_schema(url: &str, schema: &str) {
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

pub async fn run_postgres<F, Fut>(case: F)
where
    F: FnOnce(Harness) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    run_postgres_with(config(), case).await;
}

pub async fn run_postgres_with<F, Fut>(config: ServerConfig, case: F)
where
    F: FnOnce(Harness) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(url) = postgres_url() else {
        println!("skipped: CHATTER_TEST_POSTGRES_URL not set");
        return;
    };
    let schema = format!(
        "chatter_http_{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    let mut options = chatter_store::StoreOptions::default();
    options.pg_schema = Some(schema.clone());
    options.pg_pool_size = 4;
    let store = chatter_store::connect_with(&url, options)
        .await
        .expect("CHATTER_TEST_POSTGRES_URL is set but Postgres is not usable");
    let harness = start(store, config).await;
    let outcome = tokio::spawn(case(harness)).await;
    drop_schema(&url, &schema).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Runs each case on SQLite and on Postgres.
#[macro_export]
macro_rules! both_backends {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { $crate::common::run_sqlite(super::cases::$case).await; })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() { $crate::common::run_postgres(super::cases::$case).await; })*
        }
    };
}
