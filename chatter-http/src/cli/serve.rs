//! `chatter serve`, `chatter users create`, `chatter apikeys create|revoke`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::{store, write_out};
use crate::error::Error;
use crate::server::{Server, ServerConfig, auth};

/// The database `chatter serve` uses when none is configured.
const DEFAULT_DB: &str = "sqlite://chatter.db";

/// What `chatter serve` was asked to do.
#[derive(Debug, Clone)]
pub(crate) struct ServeArgs {
    pub(crate) config: Option<PathBuf>,
    pub(crate) db: Option<String>,
    pub(crate) addr: Option<SocketAddr>,
    pub(crate) models: Vec<String>,
    pub(crate) tools: Option<PathBuf>,
    pub(crate) cors_origins: Vec<String>,
}

pub(crate) fn serve(args: ServeArgs, out: &mut dyn Write) -> Result<u8, Error> {
    // Defaults, then the file, then the environment, then the flags.
    let mut config = ServerConfig::new(DEFAULT_DB);
    config.addr = SocketAddr::from(([127, 0, 0, 1], 8000));
    let file = args.config.or_else(|| {
        std::env::var_os("CHATTER_CONFIG")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    if let Some(file) = file {
        config = config.with_file(&file)?;
    }
    let mut config = config.with_env().with_rate_limit_env()?;
    if let Some(db) = args.db {
        config.db = db;
    }
    if let Some(addr) = args.addr {
        config.addr = addr;
    }
    if !args.models.is_empty() {
        config.models = args.models;
    }
    if args.tools.is_some() {
        config.tools = args.tools;
    }
    if !args.cors_origins.is_empty() {
        config.cors_origins = args.cors_origins;
    }
    let runtime = store::runtime()?;
    runtime.block_on(async {
        let server = Server::start(config).await?;
        for note in server.notes() {
            write_out(out, &format!("note: {note}\n"))?;
        }
        if let Some(key) = server.initial_admin_key() {
            write_out(
                out,
                &format!(
                    "created the first admin (username `admin`); its API key, shown once:\n  {key}\n"
                ),
            )?;
        }
        write_out(out, &format!("chatter serving on {}\n", server.base_url()))?;
        let stop = server.shutdown_handle();
        tokio::spawn(async move {
            shutdown_signal().await;
            stop.cancel();
        });
        server.wait().await?;
        write_out(out, "chatter stopped\n")?;
        Ok::<u8, Error>(0)
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = term => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn api_error(e: crate::server::ApiError) -> Error {
    Error::Usage(e.detail)
}

/// Finds a user by username or e-mail.
async fn find_user(
    db: &std::sync::Arc<dyn chatter_core::store::Store>,
    login: &str,
) -> Result<chatter_core::store::UserRecord, Error> {
    if let Some(c) = db.find_credentials(login).await?
        && let Some(u) = db.get_user(&c.user_id).await?
    {
        return Ok(u);
    }
    db.get_user_by_email(login)
        .await?
        .ok_or_else(|| Error::Usage(format!("no user `{login}`")))
}

pub(crate) fn create_user(
    db: &str,
    email: &str,
    username: &str,
    password_env: Option<&str>,
    roles: Vec<String>,
    out: &mut dyn Write,
) -> Result<u8, Error> {
    let password =
        match password_env {
            Some(var) => Some(std::env::var(var).map_err(|_| {
                Error::Usage(format!("--password-env {var}: the variable is not set"))
            })?),
            None => None,
        };
    if password.as_deref().is_some_and(|p| p.chars().count() < 8) {
        return Err(Error::Usage(
            "the password must have at least 8 characters".into(),
        ));
    }
    let roles = if roles.is_empty() {
        vec!["user".to_owned()]
    } else {
        roles
    };
    let runtime = store::runtime()?;
    runtime.block_on(async {
        let db = store::open(db).await?;
        auth::seed_roles(&db).await?;
        let user = auth::create_user(&db, email, username, password.as_deref(), roles)
            .await
            .map_err(api_error)?;
        db.append_audit(chatter_core::store::NewAuditEntry {
            ts: auth::now_ms(),
            actor_id: None,
            action: "user.create".into(),
            resource_type: "user".into(),
            resource_id: Some(user.id.clone()),
            outcome: "success".into(),
            ip_address: None,
            details: serde_json::json!({"via": "cli", "roles": user.roles}),
        })
        .await?;
        write_out(
            out,
            &format!("created user {} ({username}, {email})\n", user.id),
        )?;
        Ok(0)
    })
}

pub(crate) fn create_key(
    db: &str,
    user: &str,
    name: &str,
    out: &mut dyn Write,
) -> Result<u8, Error> {
    let runtime = store::runtime()?;
    runtime.block_on(async {
        let db = store::open(db).await?;
        let user = find_user(&db, user).await?;
        let (record, key) = auth::create_api_key(&db, &user.id, name, None)
            .await
            .map_err(api_error)?;
        db.append_audit(chatter_core::store::NewAuditEntry {
            ts: auth::now_ms(),
            actor_id: None,
            action: "apikey.create".into(),
            resource_type: "api_key".into(),
            resource_id: Some(record.id.clone()),
            outcome: "success".into(),
            ip_address: None,
            details: serde_json::json!({"via": "cli", "user_id": user.id, "prefix": record.prefix}),
        })
        .await?;
        write_out(
            out,
            &format!(
                "API key {} for {} (shown once):\n{key}\n",
                record.id, user.email
            ),
        )?;
        Ok(0)
    })
}

pub(crate) fn revoke_key(db: &str, id: &str, out: &mut dyn Write) -> Result<u8, Error> {
    let runtime = store::runtime()?;
    runtime.block_on(async {
        let db = store::open(db).await?;
        if !db.revoke_api_key(id, auth::now_ms()).await? {
            return Err(Error::Usage(format!("no active API key `{id}`")));
        }
        db.append_audit(chatter_core::store::NewAuditEntry {
            ts: auth::now_ms(),
            actor_id: None,
            action: "apikey.revoke".into(),
            resource_type: "api_key".into(),
            resource_id: Some(id.to_owned()),
            outcome: "success".into(),
            ip_address: None,
            details: serde_json::json!({"via": "cli"}),
        })
        .await?;
        write_out(out, &format!("revoked API key {id}\n"))?;
        Ok(0)
    })
}
