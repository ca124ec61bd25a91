//! `chatter serve` over real HTTP on loopback: health, problem documents, login, refresh,
//! logout, tokens, API keys, the audit trail. Every case runs on SQLite and Postgres.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

both_backends!(
    health_and_problems,
    login_refresh_logout,
    forged_expired_and_wrong_tokens,
    api_keys_create_list_revoke,
    audit_log_is_gated_and_records_denials,
    admin_manages_users_and_roles,
);

mod cases {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use hmac::{Hmac, Mac};
    use serde_json::{Value, json};
    use sha2::Sha256;

    use crate::common::{ADMIN_KEY, Harness, JWT_SECRET, PASSWORD};

    pub async fn health_and_problems(h: Harness) {
        for (path, status) in [("/live", "alive"), ("/healthz", "healthy")] {
            let a = h.get(path, None).await;
            assert_eq!(a.status, 200);
            assert_eq!(a.body["status"], status);
            assert_eq!(a.body["service"], "chatter");
            assert!(a.body["version"].is_string() && a.body["environment"].is_string());
        }
        let ready = h.get("/readyz", None).await;
        assert_eq!(ready.status, 200, "{}", ready.text);
        assert_eq!(ready.body["status"], "ready");
        assert_eq!(ready.body["checks"]["database"]["status"], "healthy");
        // Request ids: echoed when sane, generated otherwise.
        assert_eq!(ready.headers["x-request-id"].len(), 26);

        let missing = h.get("/api/v1/nope", Some(ADMIN_KEY)).await;
        missing.assert_problem(404);
        assert_eq!(missing.body["instance"], "/api/v1/nope");
        let wrong_method = h.send("DELETE", "/healthz", None, None).await;
        wrong_method.assert_problem(405);
        let anonymous = h.get("/api/v1/workflows/definitions", None).await;
        anonymous.assert_problem(401);
        assert_eq!(anonymous.body["instance"], "/api/v1/workflows/definitions");
        assert_eq!(anonymous.body["title"], "Unauthorized");
        assert_eq!(anonymous.headers["www-authenticate"], "Bearer");
    }

    async fn login(h: &Harness, body: Value) -> crate::common::Answer {
        h.post("/api/v1/auth/login", None, &body).await
    }

    fn cookie_token(a: &crate::common::Answer) -> String {
        let cookie = a.headers["set-cookie"].to_str().unwrap();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
            "{cookie}"
        );
        cookie
            .split(';')
            .next()
            .unwrap()
            .strip_prefix("chatter_refresh=")
            .unwrap()
            .to_owned()
    }

    pub async fn login_refresh_logout(h: Harness) {
        let alice = h.user("alice", &["user"]).await;
        // By username, then by e-mail (any case).
        let a = login(&h, json!({"username": "alice", "password": PASSWORD})).await;
        assert_eq!(a.status, 200, "{}", a.text);
        assert_eq!(a.body["token_type"], "bearer");
        assert_eq!(a.body["expires_in"], 1800);
        assert_eq!(a.body["user"]["id"], alice.id.as_str());
        assert_eq!(a.body["user"]["username"], "alice");
        assert_eq!(a.body["user"]["email"], "alice@example.com");
        assert_eq!(a.body["user"]["is_superuser"], false);
        let refresh = a.body["refresh_token"].as_str().unwrap().to_owned();
        assert!(refresh.starts_with("chatter_rt_"));
        assert_eq!(cookie_token(&a), refresh);
        let access = a.body["access_token"].as_str().unwrap().to_owned();
        let by_email = login(
            &h,
            json!({"email": "ALICE@example.com", "password": PASSWORD}),
        )
        .await;
        assert_eq!(by_email.status, 200, "{}", by_email.text);
        let other_session = by_email.body["access_token"].as_str().unwrap().to_owned();

        let me = h.get("/api/v1/auth/me", Some(&access)).await;
        assert_eq!(me.status, 200);
        assert_eq!(me.body["username"], "alice");

        // Wrong password and unknown user: the same 401, an audit row each, no token.
        let wrong = login(&h, json!({"username": "alice", "password": "nope"})).await;
        wrong.assert_problem(401);
        let unknown = login(&h, json!({"username": "zed", "password": PASSWORD})).await;
        unknown.assert_problem(401);
        assert_eq!(wrong.body["detail"], unknown.body["detail"]);
        let logins = h.audit("auth.login").await;
        let outcomes: Vec<&str> = logins.iter().map(|r| r.outcome.as_str()).collect();
        assert_eq!(outcomes, ["success", "success", "failure", "failure"]);
        assert_eq!(logins[2].details, json!({"login": "alice"}));
        assert_eq!(logins[2].ip_address.as_deref(), Some("127.0.0.1"));
        assert!(
            !logins[2].details.to_string().contains("nope"),
            "password in the audit"
        );
        // No login field at all: 422.
        login(&h, json!({"password": PASSWORD}))
            .await
            .assert_problem(422);
        // Malformed JSON: 400.
        h.raw(
            "POST",
            "/api/v1/auth/login",
            None,
            "application/json",
            b"{\"username\":".to_vec(),
        )
        .await
        .assert_problem(400);

        // A refresh token is not an access token.
        h.get("/api/v1/auth/me", Some(&refresh))
            .await
            .assert_problem(401);

        // Refresh rotates: the new pair works, the old refresh token is spent.
        let r = h
            .post(
                "/api/v1/auth/refresh",
                None,
                &json!({"refresh_token": refresh}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        let refresh2 = r.body["refresh_token"].as_str().unwrap().to_owned();
        assert_ne!(refresh2, refresh);
        let access2 = r.body["access_token"].as_str().unwrap().to_owned();
        assert_eq!(h.get("/api/v1/auth/me", Some(&access2)).await.status, 200);
        let again = h
            .post(
                "/api/v1/auth/refresh",
                None,
                &json!({"refresh_token": refresh}),
            )
            .await;
        again.assert_problem(401);
        // The cookie works too.
        let via_cookie = h
            .client
            .post(h.url("/api/v1/auth/refresh"))
            .header("cookie", format!("chatter_refresh={refresh2}"))
            .send()
            .await
            .unwrap();
        let via_cookie = crate::common::answer(via_cookie).await;
        assert_eq!(via_cookie.status, 200, "{}", via_cookie.text);
        let access3 = via_cookie.body["access_token"].as_str().unwrap().to_owned();

        // A rotated session's access tokens end with it.
        h.get("/api/v1/auth/me", Some(&access))
            .await
            .assert_problem(401);
        // Logout revokes the session: its access token stops working; others are untouched.
        let out = h
            .post("/api/v1/auth/logout", Some(&access3), &json!({}))
            .await;
        assert_eq!(out.status, 200, "{}", out.text);
        assert_eq!(out.body, json!({"message": "Successfully logged out"}));
        h.get("/api/v1/auth/me", Some(&access3))
            .await
            .assert_problem(401);
        assert_eq!(
            h.get("/api/v1/auth/me", Some(&other_session)).await.status,
            200
        );
        let access = other_session;
        let actions: Vec<String> = h
            .audit("auth.refresh")
            .await
            .iter()
            .map(|r| r.outcome.clone())
            .collect();
        assert_eq!(actions, ["success", "denied", "success"]);
        assert_eq!(h.audit("auth.logout").await.len(), 1);

        // Profile update persists and shows in /me.
        let put = h
            .send(
                "PUT",
                "/api/v1/auth/me",
                Some(&access),
                Some(&json!({"full_name": "Alice A.", "bio": "<b>hi</b>"})),
            )
            .await;
        assert_eq!(put.status, 200, "{}", put.text);
        assert_eq!(put.body["full_name"], "Alice A.");
        assert_eq!(
            h.get("/api/v1/auth/me", Some(&access)).await.body["bio"],
            "<b>hi</b>"
        );
        h.send(
            "PUT",
            "/api/v1/auth/me",
            Some(&access),
            Some(&json!({"is_superuser": true})),
        )
        .await
        .assert_problem(422);
    }

    fn jwt(claims: &Value, secret: &[u8]) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap());
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(format!("{header}.{payload}").as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{header}.{payload}.{sig}")
    }

    pub async fn forged_expired_and_wrong_tokens(h: Harness) {
        h.user("bob", &["user"]).await;
        let a = login(&h, json!({"username": "bob", "password": PASSWORD})).await;
        let access = a.body["access_token"].as_str().unwrap().to_owned();
        let parts: Vec<&str> = access.split('.').collect();
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["type"], "access");
        assert!(claims["jti"].is_string() && claims["sid"].is_string());
        let now = claims["iat"].as_i64().unwrap();

        let mut expired = claims.clone();
        expired["exp"] = json!(now - 10);
        let mut refresh_typed = claims.clone();
        refresh_typed["type"] = json!("refresh");
        let mut other_sid = claims.clone();
        other_sid["sid"] = json!("01NOSUCHSESSION");
        let none_alg = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
            parts[1]
        );
        let cases = [
            (jwt(&expired, JWT_SECRET), "the access token has expired"),
            (jwt(&refresh_typed, JWT_SECRET), "not an access token"),
            (jwt(&other_sid, JWT_SECRET), "the access token was revoked"),
            (jwt(&claims, b"another secret"), "invalid token signature"),
            (none_alg, "unsupported token algorithm"),
            ("garbage".to_owned(), "malformed token"),
            (format!("{}x", &access), "invalid token signature"),
            (
                "chatter_api_unknownunknownunknownunknown00".to_owned(),
                "invalid API key",
            ),
        ];
        for (token, detail) in cases {
            let a = h.get("/api/v1/auth/me", Some(&token)).await;
            a.assert_problem(401);
            assert_eq!(a.body["detail"], detail, "{token}");
        }
        // Every 401 is audited.
        let denials = h.audit("http.unauthorized").await;
        assert_eq!(denials.len(), 8);
        assert_eq!(denials[0].resource_id.as_deref(), Some("/api/v1/auth/me"));
        assert_eq!(denials[0].details["reason"], "the access token has expired");
    }

    pub async fn api_keys_create_list_revoke(h: Harness) {
        let carol = h.user("carol", &["user"]).await;
        let created = h
            .post(
                "/api/v1/auth/api-keys",
                Some(&carol.key),
                &json!({"name": "ci"}),
            )
            .await;
        assert_eq!(created.status, 200, "{}", created.text);
        let key = created.body["key"].as_str().unwrap().to_owned();
        assert!(key.starts_with("chatter_api_") && key.len() == 12 + 64);
        assert_eq!(created.body["prefix"], &key[..20]);
        let key_id = created.body["id"].as_str().unwrap().to_owned();
        // Stored as a hash only.
        let stored = h.store().list_api_keys(&carol.id).await.unwrap();
        assert_eq!(stored.len(), 2);
        assert!(
            stored
                .iter()
                .all(|k| k.key_hash != key && k.key_hash.len() == 64)
        );

        let me = h.get("/api/v1/auth/me", Some(&key)).await;
        assert_eq!(me.body["username"], "carol");
        let listed = h.get("/api/v1/auth/api-keys", Some(&key)).await;
        assert_eq!(listed.body["keys"].as_array().unwrap().len(), 2);
        assert!(!listed.text.contains(&key));

        // Another user cannot revoke it (404), the owner can, once.
        let dave = h.user("dave", &["user"]).await;
        h.send(
            "DELETE",
            &format!("/api/v1/auth/api-keys/{key_id}"),
            Some(&dave.key),
            None,
        )
        .await
        .assert_problem(404);
        let revoked = h
            .send(
                "DELETE",
                &format!("/api/v1/auth/api-keys/{key_id}"),
                Some(&carol.key),
                None,
            )
            .await;
        assert_eq!(revoked.status, 200, "{}", revoked.text);
        let a = h.get("/api/v1/auth/me", Some(&key)).await;
        a.assert_problem(401);
        assert_eq!(a.body["detail"], "this API key was revoked");
        h.send(
            "DELETE",
            &format!("/api/v1/auth/api-keys/{key_id}"),
            Some(&carol.key),
            None,
        )
        .await
        .assert_problem(409);
        assert_eq!(h.audit("apikey.create").await.len(), 1);
        assert_eq!(h.audit("apikey.revoke").await.len(), 1);
        h.post(
            "/api/v1/auth/api-keys",
            Some(&carol.key),
            &json!({"name": ""}),
        )
        .await
        .assert_problem(422);
    }

    pub async fn audit_log_is_gated_and_records_denials(h: Harness) {
        let erin = h.user("erin", &["user"]).await;
        let denied = h.get("/api/v1/audit/logs", Some(&erin.key)).await;
        denied.assert_problem(403);
        assert_eq!(
            denied.body["detail"],
            "this requires the `audit:read` permission"
        );
        h.get("/api/v1/audit/logs", None).await.assert_problem(401);

        let logs = h.get("/api/v1/audit/logs?limit=50", Some(ADMIN_KEY)).await;
        assert_eq!(logs.status, 200, "{}", logs.text);
        let rows = logs.body["logs"].as_array().unwrap();
        // Newest first: the 401, then the 403 with erin as actor.
        assert_eq!(rows[0]["action"], "http.unauthorized");
        assert_eq!(rows[0]["actor_id"], Value::Null);
        assert_eq!(rows[1]["action"], "http.forbidden");
        assert_eq!(rows[1]["actor_id"], erin.id.as_str());
        assert_eq!(rows[1]["outcome"], "denied");
        assert!(rows[1]["timestamp"].as_str().unwrap().ends_with('Z'));
        let filtered = h
            .get(
                &format!("/api/v1/audit/logs?actor_id={}", erin.id),
                Some(ADMIN_KEY),
            )
            .await;
        assert_eq!(filtered.body["logs"].as_array().unwrap().len(), 1);
        h.get("/api/v1/audit/logs?limit=0", Some(ADMIN_KEY))
            .await
            .assert_problem(422);
        h.get("/api/v1/audit/logs?limit=abc", Some(ADMIN_KEY))
            .await
            .assert_problem(422);
    }

    pub async fn admin_manages_users_and_roles(h: Harness) {
        let ann = h.user("ann", &["admin"]).await;
        let bob = h.user("bob", &["user"]).await;
        // A plain user cannot list or change users.
        h.get("/api/v1/admin/users", Some(&bob.key))
            .await
            .assert_problem(403);
        let listed = h.get("/api/v1/admin/users", Some(&ann.key)).await;
        assert_eq!(listed.status, 200, "{}", listed.text);
        assert_eq!(listed.body["total_count"], 3);

        // An admin may make bob a power user, not an admin (that needs admin:roles).
        let url = format!("/api/v1/admin/users/{}", bob.id);
        let up = h
            .send(
                "PUT",
                &url,
                Some(&ann.key),
                Some(&json!({"roles": ["power_user"]})),
            )
            .await;
        assert_eq!(up.status, 200, "{}", up.text);
        assert_eq!(up.body["roles"], json!(["power_user"]));
        h.send(
            "PUT",
            &url,
            Some(&ann.key),
            Some(&json!({"roles": ["admin"]})),
        )
        .await
        .assert_problem(403);
        h.send(
            "PUT",
            &url,
            Some(&ann.key),
            Some(&json!({"roles": ["emperor"]})),
        )
        .await
        .assert_problem(422);
        // The super admin may.
        let up = h
            .send(
                "PUT",
                &url,
                Some(ADMIN_KEY),
                Some(&json!({"roles": ["admin"]})),
            )
            .await;
        assert_eq!(up.status, 200, "{}", up.text);
        // The new role takes effect on the next request.
        assert_eq!(
            h.get("/api/v1/audit/logs", Some(&bob.key)).await.status,
            200
        );
        // Deactivated users cannot authenticate.
        let off = h
            .send(
                "PUT",
                &url,
                Some(ADMIN_KEY),
                Some(&json!({"is_active": false})),
            )
            .await;
        assert_eq!(off.status, 200);
        let a = h.get("/api/v1/auth/me", Some(&bob.key)).await;
        a.assert_problem(401);
        let login = h
            .post(
                "/api/v1/auth/login",
                None,
                &json!({"username": "bob", "password": PASSWORD}),
            )
            .await;
        login.assert_problem(401);

        let created = h
            .post(
                "/api/v1/admin/users",
                Some(&ann.key),
                &json!({"email": "cy@example.com", "username": "cy", "password": "long enough"}),
            )
            .await;
        assert_eq!(created.status, 200, "{}", created.text);
        assert_eq!(created.body["roles"], json!(["user"]));
        let dup = h
            .post(
                "/api/v1/admin/users",
                Some(&ann.key),
                &json!({"email": "cy2@example.com", "username": "CY"}),
            )
            .await;
        dup.assert_problem(409);
        h.post(
            "/api/v1/admin/users",
            Some(&ann.key),
            &json!({"email": "x@example.com", "username": "x", "roles": ["super_admin"]}),
        )
        .await
        .assert_problem(403);

        let roles = h.audit("user.roles").await;
        assert_eq!(roles.len(), 2);
        assert_eq!(
            roles[0].details,
            json!({"before": ["user"], "after": ["power_user"]})
        );
        assert_eq!(
            roles[1].actor_id.as_deref(),
            Some(
                h.store()
                    .list_users(chatter_core::store::Page::new(1, 0))
                    .await
                    .unwrap()[0]
                    .id
                    .as_str()
            )
        );
        assert_eq!(h.audit("user.deactivate").await.len(), 1);
        assert_eq!(h.audit("user.create").await.len(), 1);
    }
}
