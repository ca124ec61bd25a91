//! The v1 contract under `/api/v1/workflows` over real HTTP: exact shapes, the old bugs
//! fixed, bad input, and the RBAC matrix (owner, other user, admin, anonymous). Every case
//! runs on SQLite and Postgres.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

both_backends!(
    definitions_crud_keeps_every_field,
    invalid_and_malformed_input_is_a_problem,
    validate_answers_200_with_its_result,
    execute_definition_and_read_executions_and_logs,
    templates_execute_by_id_and_inline_without_definition_rows,
    templates_crud_export_import,
    node_types_defaults_and_preferences,
    rbac_matrix_over_definition_routes,
    workspace_members_share_by_role,
);

mod cases {
    use chatter_core::store::{DefinitionFilter, ExecutionRecord, Page};
    use serde_json::{Value, json};

    use crate::common::{ADMIN_KEY, Harness};

    const W: &str = "/api/v1/workflows";

    pub fn graph() -> Value {
        json!({
            "nodes": [
                {"id": "start", "type": "start", "position": {"x": 0, "y": 0},
                 "data": {"label": "Start", "nodeType": "start"}},
                {"id": "chat", "type": "model", "position": {"x": 200, "y": 0},
                 "data": {"label": "Chat", "nodeType": "model", "config": {"maxTokens": 300}}},
                {"id": "end", "type": "end", "position": {"x": 400, "y": 0},
                 "data": {"label": "End", "nodeType": "end"}}
            ],
            "edges": [
                {"id": "e1", "source": "start", "target": "chat"},
                {"id": "e2", "source": "chat", "target": "end", "type": "smoothstep",
                 "data": {"condition": "no_tool_calls", "label": "done"}}
            ]
        })
    }

    pub fn create_body(name: &str) -> Value {
        let mut body = graph();
        body["name"] = json!(name);
        body["description"] = json!("a chat");
        body["is_public"] = json!(false);
        body["tags"] = json!(["support", "<script>alert(1)</script>"]);
        body["template_id"] = json!("general_chat");
        body["metadata"] = json!({"color": "blue", "sql": "'; DROP TABLE users; --"});
        body
    }

    async fn definition_count(h: &Harness) -> usize {
        h.store()
            .list_definitions(
                &DefinitionFilter {
                    include_public: true,
                    ..DefinitionFilter::default()
                },
                Page::new(1000, 0),
            )
            .await
            .unwrap()
            .len()
    }

    pub async fn definitions_crud_keeps_every_field(h: Harness) {
        let alice = h.user("alice", &["user"]).await;
        let created = h
            .post(
                &format!("{W}/definitions"),
                Some(&alice.key),
                &create_body("Support"),
            )
            .await;
        assert_eq!(created.status, 200, "{}", created.text);
        let d = &created.body;
        let id = d["id"].as_str().unwrap().to_owned();
        assert_eq!(d["owner_id"], alice.id.as_str());
        assert_eq!(d["name"], "Support");
        assert_eq!(d["description"], "a chat");
        assert_eq!(d["is_public"], false);
        assert_eq!(d["tags"], json!(["support", "<script>alert(1)</script>"]));
        assert_eq!(d["template_id"], "general_chat");
        assert_eq!(
            d["metadata"],
            json!({"color": "blue", "sql": "'; DROP TABLE users; --"})
        );
        assert_eq!(d["version"], 1);
        assert_eq!(d["edges"][1]["data"]["condition"], "no_tool_calls");
        assert_eq!(
            d["nodes"][1]["data"],
            json!({"label": "Chat", "nodeType": "model", "config": {"maxTokens": 300}})
        );
        assert_eq!(d["nodes"][1]["position"], json!({"x": 200, "y": 0}));

        // Flat-shape input comes back with position and data.label/nodeType.
        let flat = json!({
            "name": "Flat",
            "nodes": [{"id": "start", "type": "start"}, {"id": "end", "type": "end", "label": "Done"}],
            "edges": [{"source": "start", "target": "end"}]
        });
        let f = h
            .post(&format!("{W}/definitions"), Some(&alice.key), &flat)
            .await;
        assert_eq!(f.status, 200, "{}", f.text);
        assert_eq!(f.body["nodes"][0]["position"], json!({"x": 0, "y": 0}));
        assert_eq!(
            f.body["nodes"][0]["data"],
            json!({"label": "start", "nodeType": "start"})
        );
        assert_eq!(f.body["nodes"][1]["data"]["label"], "Done");
        assert_eq!(f.body["edges"][0]["id"], "e0-start-end");
        assert_eq!(f.body["is_public"], false);
        assert_eq!(f.body["tags"], json!([]));
        assert_eq!(f.body["template_id"], Value::Null);

        let got = h
            .get(&format!("{W}/definitions/{id}"), Some(&alice.key))
            .await;
        assert_eq!(got.status, 200);
        assert_eq!(got.body, created.body);

        let listed = h.get(&format!("{W}/definitions"), Some(&alice.key)).await;
        assert_eq!(listed.status, 200);
        assert_eq!(listed.body["total_count"], 2);
        assert_eq!(listed.body["definitions"].as_array().unwrap().len(), 2);

        let updated = h
            .send(
                "PUT",
                &format!("{W}/definitions/{id}"),
                Some(&alice.key),
                Some(&json!({"name": "Support v2", "metadata": {"color": "red"}})),
            )
            .await;
        assert_eq!(updated.status, 200, "{}", updated.text);
        assert_eq!(updated.body["name"], "Support v2");
        assert_eq!(updated.body["metadata"], json!({"color": "red"}));
        assert_eq!(updated.body["version"], 2);
        // Untouched fields survive an update.
        assert_eq!(updated.body["template_id"], "general_chat");
        assert_eq!(updated.body["edges"], created.body["edges"]);
        assert_eq!(updated.body["tags"], created.body["tags"]);

        let deleted = h
            .send(
                "DELETE",
                &format!("{W}/definitions/{id}"),
                Some(&alice.key),
                None,
            )
            .await;
        assert_eq!(deleted.status, 200);
        assert_eq!(
            deleted.body,
            json!({"message": "Workflow definition deleted successfully", "workflow_id": id})
        );
        h.get(&format!("{W}/definitions/{id}"), Some(&alice.key))
            .await
            .assert_problem(404);
        h.send(
            "DELETE",
            &format!("{W}/definitions/{id}"),
            Some(&alice.key),
            None,
        )
        .await
        .assert_problem(404);

        let actions: Vec<String> = h
            .store()
            .list_audit(
                &chatter_core::store::AuditFilter {
                    resource_type: Some("workflow_definition".into()),
                    ..Default::default()
                },
                Page::new(100, 0),
            )
            .await
            .unwrap()
            .iter()
            .rev()
            .map(|r| r.action.clone())
            .collect();
        assert_eq!(
            actions,
            [
                "definition.create",
                "definition.create",
                "definition.update",
                "definition.delete"
            ]
        );
    }

    pub async fn invalid_and_malformed_input_is_a_problem(h: Harness) {
        let alice = h.user("alice", &["user"]).await;
        let url = format!("{W}/definitions");
        // Invalid graph (no end, edge to nowhere): 422 with contract-shaped errors, nothing stored.
        let bad = json!({"name": "bad", "nodes": [{"id": "start", "type": "start"}],
                         "edges": [{"source": "start", "target": "ghost"}]});
        let a = h.post(&url, Some(&alice.key), &bad).await;
        a.assert_problem(422);
        let errors = a.body["errors"].as_array().unwrap();
        assert!(!errors.is_empty());
        for e in errors {
            assert!(
                e["loc"].is_array() && e["msg"].is_string() && e["type"].is_string(),
                "{e}"
            );
        }
        // Unknown node kind.
        let mut unknown = create_body("x");
        unknown["nodes"][1]["data"]["nodeType"] = json!("teleport");
        unknown["nodes"][1]["type"] = json!("teleport");
        h.post(&url, Some(&alice.key), &unknown)
            .await
            .assert_problem(422);
        // Wrong types, missing fields, empty name.
        h.post(
            &url,
            Some(&alice.key),
            &json!({"name": 5, "nodes": [], "edges": []}),
        )
        .await
        .assert_problem(422);
        h.post(&url, Some(&alice.key), &json!({"nodes": [], "edges": []}))
            .await
            .assert_problem(422);
        let mut empty_name = create_body("");
        empty_name["name"] = json!("   ");
        h.post(&url, Some(&alice.key), &empty_name)
            .await
            .assert_problem(422);
        // Malformed JSON, wrong content type, oversized body.
        h.raw(
            "POST",
            &url,
            Some(&alice.key),
            "application/json",
            b"{\"name\": ".to_vec(),
        )
        .await
        .assert_problem(400);
        h.raw("POST", &url, Some(&alice.key), "text/plain", b"{}".to_vec())
            .await
            .assert_problem(415);
        let mut huge = create_body("huge");
        huge["description"] = json!("x".repeat(70 * 1024));
        h.post(&url, Some(&alice.key), &huge)
            .await
            .assert_problem(413);
        // Unknown and SQL-looking ids.
        for id in ["01ARZ3NDEKTSV4RRFFQ69G5FAV", "not-a-ulid", "'%20OR%201=1--"] {
            h.get(&format!("{url}/{id}"), Some(&alice.key))
                .await
                .assert_problem(404);
        }
        assert_eq!(definition_count(&h).await, 0);
        // The server keeps serving.
        assert_eq!(h.get("/healthz", None).await.status, 200);
    }

    pub async fn validate_answers_200_with_its_result(h: Harness) {
        let alice = h.user("alice", &["user"]).await;
        let url = format!("{W}/definitions/validate");
        let good = h.post(&url, Some(&alice.key), &create_body("ok")).await;
        assert_eq!(good.status, 200, "{}", good.text);
        assert_eq!(good.body["is_valid"], true);
        assert!(good.body["errors"].as_array().unwrap().is_empty());
        assert!(good.body["suggestions"].is_array());

        let bad = json!({"name": "bad", "nodes": [{"id": "start", "type": "start"}, {"id": "x", "type": "teleport"},
                         {"id": "end", "type": "end"}],
                         "edges": [{"source": "start", "target": "x"}, {"source": "x", "target": "end"}]});
        let a = h.post(&url, Some(&alice.key), &bad).await;
        assert_eq!(a.status, 200, "{}", a.text);
        assert_eq!(a.body["is_valid"], false);
        let first = &a.body["errors"][0];
        assert!(first["loc"].is_array() && first["msg"].is_string() && first["type"].is_string());
        assert!(!a.body["suggestions"].as_array().unwrap().is_empty());
        // Unparsable graphs are an invalid result too.
        let p = h
            .post(
                &url,
                Some(&alice.key),
                &json!({"nodes": [{"type": "start"}], "edges": []}),
            )
            .await;
        assert_eq!(p.status, 200, "{}", p.text);
        assert_eq!(p.body["is_valid"], false);
        assert_eq!(p.body["errors"][0]["loc"], json!(["nodes", 0, "id"]));
        assert_eq!(definition_count(&h).await, 0);
    }

    pub async fn execute_definition_and_read_executions_and_logs(h: Harness) {
        let alice = h.user("alice", &["user"]).await;
        let created = h
            .post(
                &format!("{W}/definitions"),
                Some(&alice.key),
                &create_body("Run me"),
            )
            .await;
        let id = created.body["id"].as_str().unwrap().to_owned();
        let run = h
            .post(
                &format!("{W}/definitions/{id}/execute"),
                Some(&alice.key),
                &json!({"definition_id": id, "input_data": {"message": "hello"}}),
            )
            .await;
        assert_eq!(run.status, 200, "{}", run.text);
        let e = &run.body;
        assert_eq!(e["status"], "completed");
        assert_eq!(e["definition_id"], id.as_str());
        assert_eq!(e["owner_id"], alice.id.as_str());
        assert_eq!(e["input_data"], json!({"message": "hello"}));
        assert_eq!(
            e["output_data"]["response"],
            chatter_http::server::OFFLINE_REPLY
        );
        assert!(e["started_at"].as_str().unwrap().ends_with('Z'));
        assert!(e["execution_time_ms"].is_i64());
        assert!(e["tokens_used"].is_i64() && e["cost"].is_number());
        let execution_id = e["id"].as_str().unwrap().to_owned();
        // The returned id is the stored one.
        let stored = h
            .store()
            .get_execution(&execution_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.definition_id.as_deref(), Some(id.as_str()));

        let detail = h
            .get(
                &format!("{W}/definitions/{id}/executions/{execution_id}"),
                Some(&alice.key),
            )
            .await;
        assert_eq!(detail.status, 200, "{}", detail.text);
        assert_eq!(detail.body["id"], execution_id.as_str());
        let logs = detail.body["logs"].as_array().unwrap();
        assert!(logs.iter().any(|l| l["step_name"] == "execution_completed"));

        let logs = h
            .get(
                &format!("{W}/definitions/{id}/executions/{execution_id}/logs"),
                Some(&alice.key),
            )
            .await;
        assert_eq!(logs.status, 200);
        let entries = logs.body.as_array().unwrap();
        assert!(entries.len() >= 4, "{}", logs.text);
        for entry in entries {
            assert!(
                ["debug", "info", "warning", "error"].contains(&entry["level"].as_str().unwrap())
            );
            let ts = entry["timestamp"].as_str().unwrap();
            assert!(
                ts.len() == 24 && ts.ends_with('Z') && &ts[10..11] == "T",
                "{ts}"
            );
            assert!(entry["message"].is_string());
        }
        assert_eq!(entries[0]["step_name"], "execution_started");
        let node_started: Vec<&str> = entries
            .iter()
            .filter(|l| l["step_name"] == "node_started")
            .map(|l| l["node_id"].as_str().unwrap())
            .collect();
        assert_eq!(node_started, ["start", "chat", "end"]);
        let errors_only = h
            .get(
                &format!("{W}/definitions/{id}/executions/{execution_id}/logs?log_level=error"),
                Some(&alice.key),
            )
            .await;
        assert_eq!(errors_only.body, json!([]));
        h.get(
            &format!("{W}/definitions/{id}/executions/{execution_id}/logs?log_level=loud"),
            Some(&alice.key),
        )
        .await
        .assert_problem(422);

        let per_def = h
            .get(
                &format!("{W}/definitions/{id}/executions"),
                Some(&alice.key),
            )
            .await;
        assert_eq!(per_def.body.as_array().unwrap().len(), 1);

        // An edited definition runs as edited (the server keeps definitions prepared, by
        // version), and its executions record the new graph's digest.
        let edited = h
            .send(
                "PUT",
                &format!("{W}/definitions/{id}"),
                Some(&alice.key),
                Some(&json!({
                    "nodes": [{"id": "start", "type": "start"}, {"id": "finish", "type": "end"}],
                    "edges": [{"source": "start", "target": "finish"}]
                })),
            )
            .await;
        assert_eq!(edited.status, 200, "{}", edited.text);
        let rerun = h
            .post(
                &format!("{W}/definitions/{id}/execute"),
                Some(&alice.key),
                &json!({"input_data": {"message": "again"}}),
            )
            .await;
        assert_eq!(rerun.status, 200, "{}", rerun.text);
        let rerun_id = rerun.body["id"].as_str().unwrap();
        let nodes: Vec<String> = h
            .store()
            .list_node_runs(rerun_id)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.node_id)
            .collect();
        assert_eq!(nodes, ["start", "finish"]);
        let digest = |record: &ExecutionRecord| record.params["graph_digest"].clone();
        let rerun_record = h.store().get_execution(rerun_id).await.unwrap().unwrap();
        assert!(digest(&rerun_record).is_string());
        assert_ne!(digest(&rerun_record), digest(&stored));

        // A mismatching definition_id is refused; nothing runs.
        h.post(
            &format!("{W}/definitions/{id}/execute"),
            Some(&alice.key),
            &json!({"definition_id": "other"}),
        )
        .await
        .assert_problem(422);

        // Executions of a deleted definition still list, with a string definition_id.
        h.send(
            "DELETE",
            &format!("{W}/definitions/{id}"),
            Some(&alice.key),
            None,
        )
        .await;
        let all = h.get(&format!("{W}/executions"), Some(&alice.key)).await;
        assert_eq!(all.status, 200);
        let list = all.body["executions"].as_array().unwrap();
        assert_eq!(list.len(), 2);
        assert!(list.iter().all(|e| e["definition_id"] == id.as_str()));
        assert_eq!(all.body["limit"], 20);
        let still = h
            .get(
                &format!("{W}/definitions/{id}/executions/{execution_id}"),
                Some(&alice.key),
            )
            .await;
        assert_eq!(still.status, 200);

        // Custom execution is reachable and records an ad-hoc execution.
        let custom = h
            .post(
                &format!("{W}/definitions/custom/execute?message=hi"),
                Some(&alice.key),
                &graph(),
            )
            .await;
        assert_eq!(custom.status, 200, "{}", custom.text);
        assert_eq!(custom.body["response"], chatter_http::server::OFFLINE_REPLY);
        assert_eq!(custom.body["definition_id"], "");
        assert_eq!(custom.body["kind"], "adhoc");
        let custom_id = custom.body["id"].as_str().unwrap();
        assert!(h.store().get_execution(custom_id).await.unwrap().is_some());
    }

    pub async fn templates_execute_by_id_and_inline_without_definition_rows(h: Harness) {
        let alice = h.user("alice", &["user"]).await;
        let listed = h.get(&format!("{W}/templates"), Some(&alice.key)).await;
        assert_eq!(listed.status, 200, "{}", listed.text);
        let templates = listed.body["templates"].as_array().unwrap();
        assert!(!templates.is_empty());
        // The built-ins are seeded into the store at start-up; each is listed once.
        let general: Vec<&Value> = templates
            .iter()
            .filter(|t| t["id"] == "general_chat")
            .collect();
        assert_eq!(general.len(), 1, "{}", listed.text);
        let builtin = general[0];
        assert_eq!(builtin["is_builtin"], true);
        assert_eq!(builtin["owner_id"], "system");
        assert!(builtin["config_hash"].is_string());
        let template_id = builtin["id"].as_str().unwrap().to_owned();

        let run = h
            .post(
                &format!("{W}/templates/{template_id}/execute"),
                Some(&alice.key),
                &json!({"input_data": {"message": "hello"}}),
            )
            .await;
        assert_eq!(run.status, 200, "{}", run.text);
        assert_eq!(run.body["status"], "completed", "{}", run.text);
        assert_eq!(run.body["definition_id"], template_id.as_str());
        let execution_id = run.body["id"].as_str().unwrap();
        let stored = h
            .store()
            .get_execution(execution_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.params["template_id"], template_id.as_str());
        assert_eq!(stored.definition_id, None);

        let export = h
            .get(
                &format!("{W}/templates/{template_id}/export"),
                Some(&alice.key),
            )
            .await;
        assert_eq!(export.status, 200);
        assert_eq!(export.body["export_format"], "json");
        let inline = h
            .post(
                &format!("{W}/templates/execute"),
                Some(&alice.key),
                &json!({"template": export.body["template"], "input_data": {"message": "hi"}}),
            )
            .await;
        assert_eq!(inline.status, 200, "{}", inline.text);
        assert_eq!(inline.body["status"], "completed");
        // Template execution writes no definition row.
        assert_eq!(definition_count(&h).await, 0);
        // Both executions list.
        let all = h.get(&format!("{W}/executions"), Some(&alice.key)).await;
        assert_eq!(all.body["executions"].as_array().unwrap().len(), 2);

        // Unknown template, bad parameters, not a template.
        h.post(
            &format!("{W}/templates/nope/execute"),
            Some(&alice.key),
            &json!({}),
        )
        .await
        .assert_problem(404);
        h.post(
            &format!("{W}/templates/{template_id}/execute"),
            Some(&alice.key),
            &json!({"input_data": {"temperature": "hot"}}),
        )
        .await
        .assert_problem(422);
        h.post(
            &format!("{W}/templates/execute"),
            Some(&alice.key),
            &json!({"template": {"name": ""}}),
        )
        .await
        .assert_problem(422);
    }

    pub async fn templates_crud_export_import(h: Harness) {
        let alice = h.user("alice", &["user"]).await;
        let bob = h.user("bob", &["user"]).await;
        let created = h
            .post(
                &format!("{W}/templates"),
                Some(&alice.key),
                &json!({"name": "Mine", "description": "my template", "tags": ["x"]}),
            )
            .await;
        assert_eq!(created.status, 200, "{}", created.text);
        let t = &created.body;
        assert_eq!(t["category"], "custom");
        assert_eq!(t["is_public"], false);
        assert_eq!(t["owner_id"], alice.id.as_str());
        assert_eq!(t["version"], 1);
        let id = t["id"].as_str().unwrap().to_owned();
        // Publishing needs template:publish.
        h.post(
            &format!("{W}/templates"),
            Some(&alice.key),
            &json!({"name": "Pub", "description": "d", "is_public": true}),
        )
        .await
        .assert_problem(403);
        // Bob neither sees nor changes it.
        h.get(&format!("{W}/templates/{id}/load"), Some(&bob.key))
            .await
            .assert_problem(404);
        h.send(
            "PUT",
            &format!("{W}/templates/{id}"),
            Some(&bob.key),
            Some(&json!({"name": "x"})),
        )
        .await
        .assert_problem(404);
        let updated = h
            .send(
                "PUT",
                &format!("{W}/templates/{id}"),
                Some(&alice.key),
                Some(&json!({"description": "better"})),
            )
            .await;
        assert_eq!(updated.status, 200, "{}", updated.text);
        assert_eq!(updated.body["description"], "better");
        assert_eq!(updated.body["version"], 2);
        // The update went through the core lifecycle: the first version is in the history.
        let versions =
            chatter_core::templates::template_versions(h.store().as_ref(), &alice.id, &id)
                .await
                .unwrap();
        assert_eq!(versions.len(), 2, "{versions:?}");
        // Built-ins are read-only.
        let builtin = h
            .get(&format!("{W}/templates"), Some(&alice.key))
            .await
            .body["templates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["is_builtin"] == true)
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        h.send(
            "DELETE",
            &format!("{W}/templates/{builtin}"),
            Some(&alice.key),
            None,
        )
        .await
        .assert_problem(403);

        let export = h
            .get(&format!("{W}/templates/{id}/export"), Some(&alice.key))
            .await;
        let imported = h
            .post(
                &format!("{W}/templates/import"),
                Some(&bob.key),
                &json!({"template": {"name": "Shared", "description": "from alice"}, "override_name": "Bob's copy"}),
            )
            .await;
        assert_eq!(imported.status, 200, "{}", imported.text);
        assert_eq!(imported.body["name"], "Bob's copy");
        assert_eq!(imported.body["owner_id"], bob.id.as_str());
        assert_eq!(export.body["template"]["description"], "better");

        let v = h
            .post(
                &format!("{W}/templates/validate"),
                Some(&alice.key),
                &json!({"template": export.body["template"]}),
            )
            .await;
        assert_eq!(v.status, 200, "{}", v.text);
        assert_eq!(v.body["is_valid"], true);
        let v = h
            .post(
                &format!("{W}/templates/validate"),
                Some(&alice.key),
                &json!({"template": {"description": 3}}),
            )
            .await;
        assert_eq!(v.body["is_valid"], false);
        assert!(v.body["errors"][0]["msg"].is_string());

        let deleted = h
            .send(
                "DELETE",
                &format!("{W}/templates/{id}"),
                Some(&alice.key),
                None,
            )
            .await;
        assert_eq!(
            deleted.body,
            json!({"message": "Workflow template deleted successfully", "workflow_id": id})
        );
        let audit: Vec<String> = h
            .store()
            .list_audit(
                &chatter_core::store::AuditFilter {
                    resource_type: Some("workflow_template".into()),
                    ..Default::default()
                },
                Page::new(100, 0),
            )
            .await
            .unwrap()
            .iter()
            .rev()
            .map(|r| r.action.clone())
            .collect();
        assert_eq!(
            audit,
            [
                "template.create",
                "template.update",
                "template.create",
                "template.delete"
            ]
        );
    }

    pub async fn node_types_defaults_and_preferences(h: Harness) {
        let alice = h.user("alice", &["user"]).await;
        let types = h.get(&format!("{W}/node-types"), Some(&alice.key)).await;
        assert_eq!(types.status, 200);
        let types = types.body.as_array().unwrap();
        assert!(types.iter().any(|t| t["type"] == "start"));
        for t in types {
            for key in ["type", "name", "description", "category", "properties"] {
                assert!(t.get(key).is_some(), "{t}");
            }
        }
        let modern = h
            .get(&format!("{W}/node-types/modern"), Some(&alice.key))
            .await;
        assert_eq!(modern.status, 200);
        assert!(modern.body.is_object());

        let d = h.get(&format!("{W}/defaults"), Some(&alice.key)).await;
        assert_eq!(d.status, 200);
        assert_eq!(d.body["memory"]["base_window_size"], 10);
        assert_eq!(d.body["model"]["provider"], "scripted");
        assert!(d.body["node_types"]["llm"].is_object(), "{}", d.text);
        h.get(&format!("{W}/defaults?node_type=warp"), Some(&alice.key))
            .await
            .assert_problem(404);

        let m = h
            .post(
                &format!("{W}/memory/configure?base_window_size=5&max_window_size=20&summary_strategy=simple"),
                Some(&alice.key),
                &json!({}),
            )
            .await;
        assert_eq!(m.status, 200, "{}", m.text);
        assert_eq!(m.body["config"]["base_window_size"], 5);
        assert_eq!(m.body["version"], 1);
        let pref = h
            .store()
            .get_preference(&alice.id, "workflow_memory")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(pref.value["summary_strategy"], "simple");
        let d = h.get(&format!("{W}/defaults"), Some(&alice.key)).await;
        assert_eq!(d.body["memory"]["max_window_size"], 20);
        h.post(
            &format!("{W}/memory/configure?base_window_size=50&max_window_size=20"),
            Some(&alice.key),
            &json!({}),
        )
        .await
        .assert_problem(422);
        h.post(
            &format!("{W}/memory/configure?base_window_size=x"),
            Some(&alice.key),
            &json!({}),
        )
        .await
        .assert_problem(422);

        let t = h
            .post(
                &format!("{W}/tools/configure?max_total_calls=4&max_consecutive_calls=2"),
                Some(&alice.key),
                &json!({}),
            )
            .await;
        assert_eq!(t.status, 200, "{}", t.text);
        let t2 = h
            .post(
                &format!("{W}/tools/configure?max_total_calls=6"),
                Some(&alice.key),
                &json!({}),
            )
            .await;
        assert_eq!(t2.body["version"], 2);
        let pref = h
            .store()
            .get_preference(&alice.id, "workflow_tools")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(pref.value["max_total_calls"], 6);
        assert_eq!(pref.value["max_consecutive_calls"], 3);
    }

    /// Every definition route as owner, other user, guest, admin and anonymous.
    pub async fn rbac_matrix_over_definition_routes(h: Harness) {
        let owner = h.user("owner", &["user"]).await;
        let other = h.user("other", &["user"]).await;
        let guest = h.user("guest", &["guest"]).await;
        let private = h
            .post(
                &format!("{W}/definitions"),
                Some(&owner.key),
                &create_body("p"),
            )
            .await;
        let private = private.body["id"].as_str().unwrap().to_owned();
        let mut public_body = create_body("pub");
        public_body["is_public"] = json!(true);
        let public = h
            .post(&format!("{W}/definitions"), Some(&owner.key), &public_body)
            .await;
        let public = public.body["id"].as_str().unwrap().to_owned();
        let run = h
            .post(
                &format!("{W}/definitions/{private}/execute"),
                Some(&owner.key),
                &json!({}),
            )
            .await;
        let execution = run.body["id"].as_str().unwrap().to_owned();

        let who: [(&str, Option<&str>); 5] = [
            ("owner", Some(&owner.key)),
            ("other", Some(&other.key)),
            ("guest", Some(&guest.key)),
            ("admin", Some(ADMIN_KEY)),
            ("anonymous", None),
        ];
        let update = json!({"description": "changed"});
        let body = json!({});
        // (method, path, body, expected statuses for owner, other, guest, admin, anonymous)
        let routes: Vec<(&str, String, Option<&Value>, [u16; 5])> = vec![
            (
                "GET",
                format!("{W}/definitions/{private}"),
                None,
                [200, 404, 404, 200, 401],
            ),
            (
                "GET",
                format!("{W}/definitions/{public}"),
                None,
                [200, 200, 200, 200, 401],
            ),
            (
                "GET",
                format!("{W}/definitions/{private}/analytics"),
                None,
                [200, 404, 404, 200, 401],
            ),
            (
                "GET",
                format!("{W}/definitions/{private}/executions"),
                None,
                [200, 404, 404, 200, 401],
            ),
            (
                "GET",
                format!("{W}/definitions/{private}/executions/{execution}"),
                None,
                [200, 404, 404, 200, 401],
            ),
            (
                "GET",
                format!("{W}/definitions/{private}/executions/{execution}/logs"),
                None,
                [200, 404, 404, 200, 401],
            ),
            (
                "PUT",
                format!("{W}/definitions/{private}"),
                Some(&update),
                [200, 404, 403, 200, 401],
            ),
            (
                "PUT",
                format!("{W}/definitions/{public}"),
                Some(&update),
                [200, 403, 403, 200, 401],
            ),
            (
                "POST",
                format!("{W}/definitions/{private}/execute"),
                Some(&body),
                [200, 404, 403, 200, 401],
            ),
            (
                "POST",
                format!("{W}/definitions/{public}/execute"),
                Some(&body),
                [200, 200, 403, 200, 401],
            ),
            (
                "POST",
                format!("{W}/definitions"),
                Some(&public_body),
                [200, 200, 403, 200, 401],
            ),
            (
                "GET",
                format!("{W}/definitions"),
                None,
                [200, 200, 200, 200, 401],
            ),
            (
                "GET",
                format!("{W}/executions"),
                None,
                [200, 200, 200, 200, 401],
            ),
            (
                "GET",
                "/api/v1/audit/logs".to_owned(),
                None,
                [403, 403, 403, 200, 401],
            ),
        ];
        for (method, path, body, expected) in &routes {
            for ((name, token), status) in who.iter().zip(expected) {
                let a = h.send(method, path, *token, *body).await;
                assert_eq!(a.status, *status, "{method} {path} as {name}: {}", a.text);
                if *status >= 400 {
                    a.assert_problem(*status);
                }
            }
        }
        // Listing is scoped: other sees the public definitions only; admin sees all.
        let names = |a: &crate::common::Answer| -> Vec<String> {
            a.body["definitions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["owner_id"].as_str().unwrap().to_owned())
                .collect()
        };
        let other_list = h.get(&format!("{W}/definitions"), Some(&other.key)).await;
        assert!(
            other_list.body["definitions"]
                .as_array()
                .unwrap()
                .iter()
                .all(|d| d["is_public"] == true || d["owner_id"] == other.id.as_str())
        );
        let admin_list = h.get(&format!("{W}/definitions"), Some(ADMIN_KEY)).await;
        assert!(names(&admin_list).contains(&owner.id));
        // Executions are private: other's list holds only their own.
        let other_execs = h.get(&format!("{W}/executions"), Some(&other.key)).await;
        assert!(
            other_execs.body["executions"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["owner_id"] == other.id.as_str())
        );
        // Deletes last: other and guest cannot, owner can.
        h.send(
            "DELETE",
            &format!("{W}/definitions/{private}"),
            Some(&other.key),
            None,
        )
        .await
        .assert_problem(404);
        h.send(
            "DELETE",
            &format!("{W}/definitions/{public}"),
            Some(&other.key),
            None,
        )
        .await
        .assert_problem(403);
        h.send(
            "DELETE",
            &format!("{W}/definitions/{public}"),
            Some(&guest.key),
            None,
        )
        .await
        .assert_problem(403);
        h.send("DELETE", &format!("{W}/definitions/{public}"), None, None)
            .await
            .assert_problem(401);
        assert_eq!(
            h.send(
                "DELETE",
                &format!("{W}/definitions/{private}"),
                Some(&owner.key),
                None
            )
            .await
            .status,
            200
        );
        assert_eq!(
            h.send(
                "DELETE",
                &format!("{W}/definitions/{public}"),
                Some(ADMIN_KEY),
                None
            )
            .await
            .status,
            200
        );
        // Every 403 was audited.
        let forbidden = h.audit("http.forbidden").await;
        assert!(forbidden.len() >= 10, "{}", forbidden.len());
        assert!(forbidden.iter().all(|r| r.actor_id.is_some()));
    }

    /// Team workspaces: members reach shared resources with the rights of their role.
    pub async fn workspace_members_share_by_role(h: Harness) {
        let owner = h.user("owner", &["user"]).await;
        let viewer = h.user("viewer", &["user"]).await;
        let editor = h.user("editor", &["user"]).await;
        let outsider = h.user("outsider", &["user"]).await;
        let def = h
            .post(
                &format!("{W}/definitions"),
                Some(&owner.key),
                &create_body("team"),
            )
            .await;
        let def = def.body["id"].as_str().unwrap().to_owned();
        let tpl = h
            .post(
                &format!("{W}/templates"),
                Some(&owner.key),
                &json!({"name": "T", "description": "d"}),
            )
            .await;
        let tpl = tpl.body["id"].as_str().unwrap().to_owned();
        let ws = h
            .post(
                "/api/v1/workspaces",
                Some(&owner.key),
                &json!({"name": "Team"}),
            )
            .await;
        assert_eq!(ws.status, 200, "{}", ws.text);
        assert_eq!(ws.body["role"], "admin");
        let ws = ws.body["id"].as_str().unwrap().to_owned();
        let member_url = |u: &str| format!("/api/v1/workspaces/{ws}/members/{u}");
        for (user, role) in [(&viewer, "viewer"), (&editor, "editor")] {
            let a = h
                .send(
                    "PUT",
                    &member_url(&user.id),
                    Some(&owner.key),
                    Some(&json!({"role": role})),
                )
                .await;
            assert_eq!(a.status, 200, "{}", a.text);
        }
        // Not shared yet: members do not see the definition.
        h.get(&format!("{W}/definitions/{def}"), Some(&viewer.key))
            .await
            .assert_problem(404);
        // Only a member with editor rights shares, and only their own resources.
        let share = |kind: &str, id: &str| json!({"resource_type": kind, "resource_id": id});
        let resources = format!("/api/v1/workspaces/{ws}/resources");
        h.post(&resources, Some(&viewer.key), &share("definition", &def))
            .await
            .assert_problem(403);
        h.post(&resources, Some(&editor.key), &share("definition", &def))
            .await
            .assert_problem(404);
        h.post(&resources, Some(&outsider.key), &share("definition", &def))
            .await
            .assert_problem(404);
        h.post(&resources, Some(&owner.key), &share("execution", &def))
            .await
            .assert_problem(422);
        h.post(&resources, Some(&owner.key), &share("definition", "nope"))
            .await
            .assert_problem(404);
        for (kind, id) in [("definition", &def), ("template", &tpl)] {
            let a = h.post(&resources, Some(&owner.key), &share(kind, id)).await;
            assert_eq!(a.status, 200, "{}", a.text);
        }

        let update = json!({"description": "edited"});
        let empty = json!({});
        let as_viewer = json!({"role": "viewer"});
        let d = format!("{W}/definitions/{def}");
        let t = format!("{W}/templates/{tpl}");
        let who = [
            ("owner", &owner),
            ("viewer", &viewer),
            ("editor", &editor),
            ("outsider", &outsider),
        ];
        let routes: Vec<(&str, String, Option<&Value>, [u16; 4])> = vec![
            ("GET", d.clone(), None, [200, 200, 200, 404]),
            ("PUT", d.clone(), Some(&update), [200, 403, 200, 404]),
            (
                "POST",
                format!("{d}/execute"),
                Some(&empty),
                [200, 200, 200, 404],
            ),
            ("GET", format!("{d}/analytics"), None, [200, 200, 200, 404]),
            ("GET", format!("{t}/load"), None, [200, 200, 200, 404]),
            ("PUT", t.clone(), Some(&update), [200, 403, 200, 404]),
            ("DELETE", d.clone(), None, [0, 403, 403, 404]),
            ("DELETE", t.clone(), None, [0, 403, 403, 404]),
            (
                "GET",
                format!("/api/v1/workspaces/{ws}"),
                None,
                [200, 200, 200, 404],
            ),
            (
                "PUT",
                member_url(&outsider.id),
                Some(&as_viewer),
                [0, 403, 403, 404],
            ),
        ];
        for (method, path, body, expected) in &routes {
            for ((name, user), status) in who.iter().zip(expected) {
                if *status == 0 {
                    continue;
                }
                let a = h.send(method, path, Some(&user.key), *body).await;
                assert_eq!(a.status, *status, "{method} {path} as {name}: {}", a.text);
            }
        }
        // Shared definitions list for members.
        let listed = h.get(&format!("{W}/definitions"), Some(&viewer.key)).await;
        let ids: Vec<&str> = listed.body["definitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [def.as_str()]);
        let templates = h.get(&format!("{W}/templates"), Some(&viewer.key)).await;
        assert!(
            templates.body["templates"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["id"] == tpl.as_str())
        );
        let mine = h.get("/api/v1/workspaces", Some(&viewer.key)).await;
        assert_eq!(mine.body["workspaces"][0]["role"], "viewer");
        let shown = h
            .get(&format!("/api/v1/workspaces/{ws}"), Some(&viewer.key))
            .await;
        assert_eq!(shown.body["members"].as_array().unwrap().len(), 3);

        // Promote the viewer; remove the editor, who then loses access.
        let promoted = h
            .send(
                "PUT",
                &member_url(&viewer.id),
                Some(&owner.key),
                Some(&json!({"role": "editor"})),
            )
            .await;
        assert_eq!(promoted.body["role"], "editor");
        assert_eq!(
            h.send("PUT", &d, Some(&viewer.key), Some(&update))
                .await
                .status,
            200
        );
        assert_eq!(
            h.send("DELETE", &member_url(&editor.id), Some(&owner.key), None)
                .await
                .status,
            200
        );
        h.get(&d, Some(&editor.key)).await.assert_problem(404);
        // Bad member changes.
        h.send(
            "PUT",
            &member_url(&outsider.id),
            Some(&owner.key),
            Some(&json!({"role": "boss"})),
        )
        .await
        .assert_problem(422);
        h.send(
            "PUT",
            &member_url("01NOSUCHUSER"),
            Some(&owner.key),
            Some(&json!({"role": "viewer"})),
        )
        .await
        .assert_problem(404);
        h.send(
            "PUT",
            &member_url(&owner.id),
            Some(&owner.key),
            Some(&json!({"role": "viewer"})),
        )
        .await
        .assert_problem(409);
        // Unsharing ends access.
        let unshare = format!("/api/v1/workspaces/{ws}/resources/definition/{def}");
        assert_eq!(
            h.send("DELETE", &unshare, Some(&viewer.key), None)
                .await
                .status,
            200
        );
        h.get(&d, Some(&viewer.key)).await.assert_problem(404);
        h.send("DELETE", &unshare, Some(&owner.key), None)
            .await
            .assert_problem(404);

        let actions: Vec<String> = h
            .store()
            .list_audit(
                &chatter_core::store::AuditFilter {
                    resource_type: Some("workspace".into()),
                    ..Default::default()
                },
                Page::new(100, 0),
            )
            .await
            .unwrap()
            .iter()
            .rev()
            .map(|r| r.action.clone())
            .collect();
        assert_eq!(
            actions,
            [
                "workspace.create",
                "workspace.member.set",
                "workspace.member.set",
                "workspace.share",
                "workspace.share",
                "workspace.member.set",
                "workspace.member.remove",
                "workspace.unshare",
            ]
        );
        let set = h.audit("workspace.member.set").await;
        assert_eq!(
            set[2].details,
            json!({"user_id": viewer.id, "before": "viewer", "after": "editor"})
        );
        // The owner deletes the workspace; nobody else could.
        let ws_url = format!("/api/v1/workspaces/{ws}");
        h.send("DELETE", &ws_url, Some(&viewer.key), None)
            .await
            .assert_problem(403);
        assert_eq!(
            h.send("DELETE", &ws_url, Some(&owner.key), None)
                .await
                .status,
            200
        );
        h.get(&ws_url, Some(&owner.key)).await.assert_problem(404);
    }
}
