//! `chatter serve`, `chatter users create` and `chatter apikeys create|revoke` as an operator
//! runs them: first start prints the admin key once, keys work over HTTP and stop working when
//! revoked, SIGTERM shuts down gracefully, a restart creates no second admin.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};

fn chatter() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_chatter"));
    for var in [
        "CHATTER_ADMIN_API_KEY",
        "CHATTER_JWT_SECRET",
        "CHATTER_MODELS",
        "CHATTER_TOOLS",
        "CHATTER_CORS_ORIGINS",
    ] {
        command.env_remove(var);
    }
    command
}

/// Starts `chatter serve` and reads its start-up lines up to the address. The child is
/// returned to the caller, who waits for it in `stop`.
#[allow(clippy::zombie_processes)]
fn serve(db: &str) -> (Child, BufReader<ChildStdout>, Vec<String>, String) {
    serve_with(&["--db", db])
}

#[allow(clippy::zombie_processes)]
fn serve_with(args: &[&str]) -> (Child, BufReader<ChildStdout>, Vec<String>, String) {
    let mut child = chatter()
        .arg("serve")
        .args(args)
        .args(["--addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "server exited: {lines:?}"
        );
        let line = line.trim_end().to_owned();
        if let Some(url) = line.strip_prefix("chatter serving on ") {
            let url = url.to_owned();
            lines.push(line);
            return (child, out, lines, url);
        }
        lines.push(line);
    }
}

fn stop(mut child: Child, mut out: BufReader<ChildStdout>) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!(rest, "chatter stopped\n");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

async fn status(client: &reqwest::Client, url: &str, key: &str) -> u16 {
    client
        .get(url)
        .header("authorization", format!("Bearer {key}"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_first_start_keys_and_graceful_shutdown() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = std::env::temp_dir().join(format!("chatter-serve-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite://{}/chatter.db", dir.display());
    let client = reqwest::Client::builder().no_proxy().build().unwrap();

    let (child, out, lines, url) = serve(&db);
    assert_eq!(
        lines[0],
        "note: no model provider configured (--model / CHATTER_MODELS): serving the offline `scripted` model"
    );
    assert_eq!(
        lines[1],
        "created the first admin (username `admin`); its API key, shown once:"
    );
    let admin_key = lines[2].trim().to_owned();
    assert!(admin_key.starts_with("chatter_api_"), "{lines:?}");
    let me = format!("{url}/api/v1/auth/me");
    assert_eq!(status(&client, &me, &admin_key).await, 200);
    assert_eq!(
        client
            .get(format!("{url}/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );

    // Operators add users and keys while the server runs.
    let created = chatter()
        .args([
            "users",
            "create",
            "--db",
            &db,
            "--email",
            "ann@example.com",
            "--username",
            "ann",
            "--password-env",
            "ANN_PASSWORD",
            "--role",
            "power_user",
        ])
        .env("ANN_PASSWORD", "a long password")
        .output()
        .unwrap();
    assert_eq!(created.status.code(), Some(0), "{created:?}");
    assert!(
        String::from_utf8(created.stdout)
            .unwrap()
            .ends_with("(ann, ann@example.com)\n")
    );
    let login = client
        .post(format!("{url}/api/v1/auth/login"))
        .header("content-type", "application/json")
        .body(r#"{"username": "ann", "password": "a long password"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(login.status().as_u16(), 200);

    let key = chatter()
        .args([
            "apikeys",
            "create",
            "--db",
            &db,
            "--user",
            "ann@example.com",
            "--name",
            "ops",
        ])
        .output()
        .unwrap();
    assert_eq!(key.status.code(), Some(0), "{key:?}");
    let text = String::from_utf8(key.stdout).unwrap();
    let mut text_lines = text.lines();
    let header = text_lines.next().unwrap();
    let key_id = header.split(' ').nth(2).unwrap().to_owned();
    let ann_key = text_lines.next().unwrap().to_owned();
    assert!(ann_key.starts_with("chatter_api_"));
    assert_eq!(status(&client, &me, &ann_key).await, 200);

    let revoked = chatter()
        .args(["apikeys", "revoke", &key_id, "--db", &db])
        .output()
        .unwrap();
    assert_eq!(revoked.status.code(), Some(0), "{revoked:?}");
    // Revoked by another process: the server trusts a verified key for `auth_cache_ttl`
    // (2 s) before looking it up again, so the key stops working within that time.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while status(&client, &me, &ann_key).await != 401 {
        assert!(
            std::time::Instant::now() < deadline,
            "the key revoked by `chatter apikeys revoke` still works after 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let again = chatter()
        .args(["apikeys", "revoke", &key_id, "--db", &db])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert_eq!(
        String::from_utf8(again.stderr).unwrap(),
        format!("error: no active API key `{key_id}`\n")
    );
    // A duplicate username and an unknown role are refused.
    let dup = chatter()
        .args([
            "users",
            "create",
            "--db",
            &db,
            "--email",
            "x@example.com",
            "--username",
            "ANN",
        ])
        .output()
        .unwrap();
    assert_eq!(dup.status.code(), Some(2));
    let bad_role = chatter()
        .args([
            "users",
            "create",
            "--db",
            &db,
            "--email",
            "y@example.com",
            "--username",
            "y",
            "--role",
            "emperor",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(bad_role.stderr).unwrap(),
        "error: unknown role `emperor`\n"
    );

    stop(child, out);

    // A restart on the same database creates no second admin; the first key still works.
    let (child, out, lines, url) = serve(&db);
    assert!(
        !lines.iter().any(|l| l.contains("first admin")),
        "{lines:?}"
    );
    assert_eq!(
        status(&client, &format!("{url}/api/v1/auth/me"), &admin_key).await,
        200
    );
    stop(child, out);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reads_a_config_file_and_answers_cors() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = std::env::temp_dir().join(format!("chatter-serve-{}", ulid::Ulid::new()));
    std::fs::create_dir_all(&dir).unwrap();
    let model = dir.join("model.json");
    std::fs::write(&model, r#"{"default": {"content": "configured"}}"#).unwrap();
    let config = dir.join("chatter.json");
    std::fs::write(
        &config,
        serde_json::json!({
            "db": format!("sqlite://{}/c.db", dir.display()),
            "models": [format!("scripted:{}", model.display())],
            "cors_origins": ["https://app.example.com"],
        })
        .to_string(),
    )
    .unwrap();
    let (child, out, lines, url) = serve_with(&["--config", config.to_str().unwrap()]);
    // A provider is configured: no offline note; the database of the file was created.
    assert!(lines[0].starts_with("created the first admin"), "{lines:?}");
    assert!(dir.join("c.db").exists());
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let preflight = client
        .request(reqwest::Method::OPTIONS, format!("{url}/api/v1/auth/login"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let other = client
        .get(format!("{url}/healthz"))
        .header("origin", "https://evil.example.com")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());
    stop(child, out);

    // A bad file is a usage error naming it.
    std::fs::write(&config, r#"{"dbb": "x"}"#).unwrap();
    let bad = chatter()
        .args(["serve", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8(bad.stderr).unwrap();
    assert!(
        err.starts_with(&format!(
            "error: --config {}: unknown field `dbb`",
            config.display()
        )),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
