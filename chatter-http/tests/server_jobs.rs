//! The job queue over real HTTP: `?async=true` on the execute endpoints, `/api/v1/jobs`
//! submit/list/get/cancel/stats/batch, priorities served in order, retries with backoff,
//! per-job timeouts, cancellation of queued and running jobs, a batch's concurrency cap, owner
//! scoping and bad input, and jobs that survive a server restart. The main cases run on SQLite
//! and Postgres (`CHATTER_TEST_POSTGRES_URL`).
//!
//! Waiting is polling with a generous deadline; nothing asserts how long something took.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use chatter_core::store::{ExecutionRecord, ExecutionStatus, Store};
use chatter_http::server::{OFFLINE_REPLY, Server, ServerConfig};
use serde_json::{Value, json};

use crate::common::{ADMIN_KEY, Harness};

const W: &str = "/api/v1/workflows";
const DEADLINE: Duration = Duration::from_secs(30);

/// The scripted model of these tests: `boom` fails the call, anything else answers `ok`.
fn script_path() -> String {
    let path = std::env::temp_dir().join(format!("chatter-jobs-script-{}.json", ulid::Ulid::new()));
    std::fs::write(
        &path,
        json!({
            "rules": [{"match": {"contains": "boom"},
                       "reply": {"error": {"class": "bad_request", "message": "scripted boom"}}}],
            "default": {"content": OFFLINE_REPLY}
        })
        .to_string(),
    )
    .unwrap();
    format!("scripted:{}", path.display())
}

fn config(workers: usize) -> ServerConfig {
    let mut config = common::config();
    config.models = vec![script_path()];
    config.job_workers = workers;
    config.job_poll_interval = Duration::from_millis(50);
    config.job_lease = Duration::from_secs(5);
    config.job_retry_base = Duration::from_millis(200);
    config.resume_interval = Duration::from_millis(200);
    config
}

fn node(id: &str, kind: &str, config: Value) -> Value {
    json!({"id": id, "type": kind, "position": {"x": 0, "y": 0},
           "data": {"label": id, "nodeType": kind, "config": config}})
}

/// start → chat (model) → end.
fn chat_graph() -> Value {
    json!({
        "nodes": [node("start", "start", json!({})), node("chat", "model", json!({})),
                  node("end", "end", json!({}))],
        "edges": [{"id": "e1", "source": "start", "target": "chat"},
                  {"id": "e2", "source": "chat", "target": "end"}]
    })
}

/// start → wait (`delay_ms`) → end.
fn delay_graph(delay_ms: u64) -> Value {
    json!({
        "nodes": [node("start", "start", json!({})),
                  node("wait", "delay", json!({"delay_type": "fixed", "delay_ms": delay_ms})),
                  node("end", "end", json!({}))],
        "edges": [{"id": "e1", "source": "start", "target": "wait"},
                  {"id": "e2", "source": "wait", "target": "end"}]
    })
}

async fn create_definition(h: &Harness, key: &str, name: &str, graph: Value) -> String {
    let mut body = graph;
    body["name"] = json!(name);
    let created = h.post(&format!("{W}/definitions"), Some(key), &body).await;
    assert_eq!(created.status, 200, "{}", created.text);
    created.body["id"].as_str().unwrap().to_owned()
}

async fn submit(h: &Harness, key: &str, body: Value) -> Value {
    let answer = h.post("/api/v1/jobs", Some(key), &body).await;
    assert_eq!(answer.status, 202, "{}", answer.text);
    answer.body
}

async fn job(h: &Harness, key: &str, id: &str) -> Value {
    let answer = h.get(&format!("/api/v1/jobs/{id}"), Some(key)).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    answer.body
}

/// Polls a job until `done` holds (30 s at most).
async fn wait_job(h: &Harness, key: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let give_up = tokio::time::Instant::now() + DEADLINE;
    loop {
        let current = job(h, key, id).await;
        if done(&current) {
            return current;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "job {id} never got there: {current}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_status(h: &Harness, key: &str, id: &str, status: &str) -> Value {
    wait_job(h, key, id, |j| j["status"] == status).await
}

async fn execution(store: &Arc<dyn Store>, id: &str) -> ExecutionRecord {
    store.get_execution(id).await.unwrap().unwrap()
}

mod cases {
    use super::*;

    /// `?async=true` on the four execute endpoints answers 202 with a queued job naming the
    /// execution it will run; the job completes and that execution is readable with the
    /// model's answer, through the execution endpoints too.
    pub async fn async_execute_completes(h: Harness) {
        let alice = h.user("alice", &["user"]).await;
        let def = create_definition(&h, &alice.key, "Chat", chat_graph()).await;

        let by_definition = h
            .post(
                &format!("{W}/definitions/{def}/execute?async=true&priority=high"),
                Some(&alice.key),
                &json!({"input_data": {"message": "hello"}}),
            )
            .await;
        assert_eq!(by_definition.status, 202, "{}", by_definition.text);
        let accepted = &by_definition.body;
        let job_id = accepted["id"].as_str().unwrap();
        assert_eq!(accepted["job_id"], job_id);
        assert_eq!(
            by_definition.headers["location"].to_str().unwrap(),
            format!("/api/v1/jobs/{job_id}")
        );
        assert_eq!(accepted["priority"], "high");
        assert_eq!(accepted["workflow_id"], def.as_str());
        assert_eq!(accepted["owner_id"], alice.id.as_str());
        assert!(
            ["queued", "running", "completed"].contains(&accepted["status"].as_str().unwrap()),
            "{accepted}"
        );
        let execution_id = accepted["execution_id"].as_str().unwrap().to_owned();

        let done = wait_status(&h, &alice.key, job_id, "completed").await;
        assert_eq!(done["execution_id"], execution_id.as_str());
        assert_eq!(done["result"]["execution_id"], execution_id.as_str());
        assert_eq!(done["result"]["status"], "completed");
        assert_eq!(done["result"]["response"], OFFLINE_REPLY);
        assert_eq!(
            (done["attempts"].clone(), done["retry_count"].clone()),
            (json!(1), json!(0))
        );
        assert_eq!(done["progress"], 100.0);
        assert!(done["started_at"].is_string() && done["completed_at"].is_string());
        assert_eq!(done["error"], Value::Null);

        let read = h
            .get(
                &format!("{W}/definitions/{def}/executions/{execution_id}"),
                Some(&alice.key),
            )
            .await;
        assert_eq!(read.status, 200, "{}", read.text);
        assert_eq!(read.body["status"], "completed");
        assert_eq!(read.body["output_data"]["response"], OFFLINE_REPLY);
        assert_eq!(read.body["input_data"]["message"], "hello");
        let steps = h
            .get(
                &format!("{W}/executions/{execution_id}/steps"),
                Some(&alice.key),
            )
            .await;
        assert_eq!(steps.status, 200, "{}", steps.text);
        let nodes: Vec<&str> = steps.body["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["node_id"].as_str().unwrap())
            .collect();
        assert_eq!(nodes, ["start", "chat", "end"]);

        // The other three execute endpoints.
        let custom = h
            .post(
                &format!("{W}/definitions/custom/execute?async=true&message=hi"),
                Some(&alice.key),
                &chat_graph(),
            )
            .await;
        assert_eq!(custom.status, 202, "{}", custom.text);
        let template = h
            .post(
                &format!("{W}/templates/general_chat/execute?async=true&priority=low"),
                Some(&alice.key),
                &json!({"input_data": {"message": "hi"}}),
            )
            .await;
        assert_eq!(template.status, 202, "{}", template.text);
        assert_eq!(template.body["priority"], "low");
        let inline = h
            .post(
                &format!("{W}/templates/execute?async=true"),
                Some(&alice.key),
                &json!({"template": {"name": "inline", "description": "d", "category": "custom",
                                      "default_params": {}},
                        "input_data": {"message": "hi"}}),
            )
            .await;
        assert_eq!(inline.status, 202, "{}", inline.text);
        for accepted in [&custom.body, &template.body, &inline.body] {
            let id = accepted["id"].as_str().unwrap();
            let done = wait_status(&h, &alice.key, id, "completed").await;
            let record = execution(h.store(), done["execution_id"].as_str().unwrap()).await;
            assert_eq!(record.status, ExecutionStatus::Completed, "{done}");
            assert_eq!(record.response.as_deref(), Some(OFFLINE_REPLY));
            assert_eq!(record.owner_id, alice.id);
        }
        let template_run =
            execution(h.store(), template.body["execution_id"].as_str().unwrap()).await;
        assert_eq!(
            template_run.params["template_id"], "general_chat",
            "{template_run:?}"
        );

        let listed = h.get("/api/v1/jobs", Some(&alice.key)).await;
        assert_eq!(listed.status, 200);
        assert_eq!(listed.body["jobs"].as_array().unwrap().len(), 4);
        let stats = h.get("/api/v1/jobs/stats", Some(&alice.key)).await;
        assert_eq!(stats.status, 200);
        assert_eq!(
            (
                stats.body["total_jobs"].clone(),
                stats.body["completed_jobs"].clone(),
                stats.body["by_priority"]["high"].clone(),
                stats.body["by_priority"]["low"].clone(),
                stats.body["by_priority"]["normal"].clone()
            ),
            (json!(4), json!(4), json!(1), json!(1), json!(2))
        );
    }

    /// A failing execution is retried with a new execution after a backoff that doubles
    /// (200 ms, then 400 ms here), then the job fails with the last error recorded.
    pub async fn retries_with_backoff_then_fails(h: Harness) {
        let alice = h.user("alice", &["user"]).await;
        let def = create_definition(&h, &alice.key, "Flaky", chat_graph()).await;
        let accepted = submit(
            &h,
            &alice.key,
            json!({"workflow_id": def, "input": {"message": "boom"}, "max_attempts": 3}),
        )
        .await;
        let id = accepted["id"].as_str().unwrap();
        let first_execution = accepted["execution_id"].as_str().unwrap().to_owned();
        let failed = wait_status(&h, &alice.key, id, "failed").await;
        assert_eq!(
            (
                failed["attempts"].clone(),
                failed["retry_count"].clone(),
                failed["max_retries"].clone()
            ),
            (json!(3), json!(2), json!(2))
        );
        let error = failed["error"].as_str().unwrap();
        assert!(
            error.starts_with(&format!(
                "execution {} failed: ",
                failed["execution_id"].as_str().unwrap()
            )) && error.contains("scripted boom"),
            "{error}"
        );
        assert_eq!(failed["result"], Value::Null);
        assert_ne!(failed["execution_id"], first_execution.as_str());

        // Three executions, each failed; each retry started no earlier than its backoff.
        let mut runs = h
            .store()
            .list_executions(
                &chatter_core::store::ExecutionFilter {
                    owner_id: Some(alice.id.clone()),
                    ..Default::default()
                },
                chatter_core::store::Page::new(10, 0),
            )
            .await
            .unwrap();
        runs.sort_by_key(|r| r.created_at);
        assert_eq!(runs.len(), 3);
        assert!(runs.iter().all(|r| r.status == ExecutionStatus::Failed));
        assert_eq!(runs[0].id, first_execution);
        for (n, pair) in runs.windows(2).enumerate() {
            let gap = pair[1].created_at - pair[0].finished_at.unwrap();
            let backoff = 200 * (1 << n);
            assert!(gap >= backoff, "retry {n} came {gap} ms after the failure");
        }
    }

    /// An attempt over the job's timeout is cancelled and the job fails saying so.
    pub async fn timeout_cancels_the_attempt(h: Harness) {
        let alice = h.user("alice", &["user"]).await;
        let def = create_definition(&h, &alice.key, "Slow", delay_graph(3_600_000)).await;
        let accepted = submit(
            &h,
            &alice.key,
            json!({"workflow_id": def, "timeout_ms": 300, "max_attempts": 1}),
        )
        .await;
        let id = accepted["id"].as_str().unwrap();
        let execution_id = accepted["execution_id"].as_str().unwrap();
        let failed = wait_status(&h, &alice.key, id, "failed").await;
        assert_eq!(
            failed["error"],
            format!("the attempt timed out after 300 ms; execution {execution_id} was cancelled")
        );
        assert_eq!(
            execution(h.store(), execution_id).await.status,
            ExecutionStatus::Cancelled
        );
    }

    /// Cancel: a queued job never runs; a running one's execution is stopped and recorded
    /// `cancelled`; a second cancel is a conflict; the worker goes on with the next job.
    pub async fn cancel_queued_and_running(h: Harness) {
        let alice = h.user("alice", &["user"]).await;
        let slow = create_definition(&h, &alice.key, "Slow", delay_graph(3_600_000)).await;
        let quick = create_definition(&h, &alice.key, "Quick", chat_graph()).await;
        let running = submit(&h, &alice.key, json!({"workflow_id": slow})).await;
        let running_id = running["id"].as_str().unwrap();
        wait_status(&h, &alice.key, running_id, "running").await;
        // The only worker is busy: this one stays queued.
        let queued = submit(&h, &alice.key, json!({"workflow_id": quick})).await;
        let queued_id = queued["id"].as_str().unwrap();
        assert_eq!(job(&h, &alice.key, queued_id).await["status"], "queued");

        let cancelled = h
            .post(
                &format!("/api/v1/jobs/{queued_id}/cancel"),
                Some(&alice.key),
                &json!({}),
            )
            .await;
        assert_eq!(cancelled.status, 200, "{}", cancelled.text);
        assert_eq!(cancelled.body["status"], "cancelled");
        assert!(cancelled.body["completed_at"].is_string());
        // `/metrics` counts the queue's jobs by status and priority, zeros included.
        let scraped = h
            .client
            .get(h.url("/metrics"))
            .header("accept", "text/plain")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for line in [
            "chatter_jobs{status=\"running\",priority=\"normal\"} 1",
            "chatter_jobs{status=\"cancelled\",priority=\"normal\"} 1",
            "chatter_jobs{status=\"queued\",priority=\"normal\"} 0",
            "chatter_jobs{status=\"failed\",priority=\"critical\"} 0",
        ] {
            assert!(
                scraped.lines().any(|l| l == line),
                "no `{line}` in:\n{scraped}"
            );
        }

        // Wait until the running job's execution really runs, then cancel it with DELETE.
        let execution_id = running["execution_id"].as_str().unwrap().to_owned();
        let give_up = tokio::time::Instant::now() + DEADLINE;
        while h
            .store()
            .get_execution(&execution_id)
            .await
            .unwrap()
            .map(|r| r.status)
            != Some(ExecutionStatus::Running)
        {
            assert!(
                tokio::time::Instant::now() < give_up,
                "the execution never started"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let cancelled = h
            .send(
                "DELETE",
                &format!("/api/v1/jobs/{running_id}"),
                Some(&alice.key),
                None,
            )
            .await;
        assert_eq!(cancelled.status, 200, "{}", cancelled.text);
        assert_eq!(cancelled.body["status"], "cancelled");
        let give_up = tokio::time::Instant::now() + DEADLINE;
        while execution(h.store(), &execution_id).await.status != ExecutionStatus::Cancelled {
            assert!(
                tokio::time::Instant::now() < give_up,
                "the execution was not stopped"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let again = h
            .post(
                &format!("/api/v1/jobs/{running_id}/cancel"),
                Some(&alice.key),
                &json!({}),
            )
            .await;
        again.assert_problem(409);
        assert_eq!(
            again.body["detail"],
            format!("job `{running_id}` has already ended (cancelled)")
        );

        // The worker is free again; the cancelled ones stayed cancelled and never ran.
        let next = submit(&h, &alice.key, json!({"workflow_id": quick})).await;
        wait_status(&h, &alice.key, next["id"].as_str().unwrap(), "completed").await;
        for id in [queued_id, running_id] {
            assert_eq!(job(&h, &alice.key, id).await["status"], "cancelled");
        }
        assert_eq!(
            h.store()
                .get_execution(queued["execution_id"].as_str().unwrap())
                .await
                .unwrap(),
            None,
            "a cancelled queued job never runs"
        );

        // Cancelling the execution through the execution endpoint ends its job too.
        let third = submit(&h, &alice.key, json!({"workflow_id": slow})).await;
        let third_execution = third["execution_id"].as_str().unwrap().to_owned();
        let give_up = tokio::time::Instant::now() + DEADLINE;
        while h
            .store()
            .get_execution(&third_execution)
            .await
            .unwrap()
            .map(|r| r.status)
            != Some(ExecutionStatus::Running)
        {
            assert!(
                tokio::time::Instant::now() < give_up,
                "the execution never started"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let stopped = h
            .post(
                &format!("{W}/executions/{third_execution}/cancel"),
                Some(&alice.key),
                &json!({}),
            )
            .await;
        assert_eq!(stopped.status, 200, "{}", stopped.text);
        assert_eq!(stopped.body["status"], "cancelled");
        wait_status(&h, &alice.key, third["id"].as_str().unwrap(), "cancelled").await;

        let stats = h.get("/api/v1/jobs/stats", Some(&alice.key)).await;
        assert_eq!(stats.body["cancelled_jobs"], 3);
        assert_eq!(stats.body["completed_jobs"], 1);
    }

    /// A batch of 6 inputs with `concurrency: 2` on 4 workers: every job completes, and no
    /// two executions of the batch overlapped with a third (checked on the recorded start
    /// and end times, and by polling while it runs).
    pub async fn batch_respects_its_concurrency_cap(h: Harness) {
        let alice = h.user("alice", &["user"]).await;
        let def = create_definition(&h, &alice.key, "Slowish", delay_graph(300)).await;
        let inputs: Vec<Value> = (0..6).map(|i| json!({"n": i})).collect();
        let answer = h
            .post(
                "/api/v1/jobs/batch",
                Some(&alice.key),
                &json!({"workflow_id": def, "inputs": inputs, "concurrency": 2}),
            )
            .await;
        assert_eq!(answer.status, 202, "{}", answer.text);
        let batch_id = answer.body["batch_id"].as_str().unwrap().to_owned();
        assert_eq!(answer.body["total_jobs"], 6);
        let ids: Vec<String> = answer.body["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_owned())
            .collect();

        let give_up = tokio::time::Instant::now() + DEADLINE;
        loop {
            let listed = h
                .get(
                    &format!("/api/v1/jobs?batch_id={batch_id}"),
                    Some(&alice.key),
                )
                .await;
            let jobs = listed.body["jobs"].as_array().unwrap().clone();
            assert_eq!(jobs.len(), 6);
            let running = jobs.iter().filter(|j| j["status"] == "running").count();
            assert!(running <= 2, "{running} jobs of the batch ran at once");
            if jobs.iter().all(|j| j["status"] == "completed") {
                break;
            }
            assert!(
                tokio::time::Instant::now() < give_up,
                "the batch never finished: {jobs:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut spans = Vec::new();
        for id in &ids {
            let done = job(&h, &alice.key, id).await;
            let record = execution(h.store(), done["execution_id"].as_str().unwrap()).await;
            assert_eq!(record.status, ExecutionStatus::Completed);
            spans.push((record.started_at.unwrap(), record.finished_at.unwrap()));
        }
        let inputs: Vec<i64> = {
            let mut seen = Vec::new();
            for id in &ids {
                let done = job(&h, &alice.key, id).await;
                let record = execution(h.store(), done["execution_id"].as_str().unwrap()).await;
                seen.push(record.input["n"].as_i64().unwrap());
            }
            seen.sort_unstable();
            seen
        };
        assert_eq!(inputs, [0, 1, 2, 3, 4, 5]);
        for (start, _) in &spans {
            let overlapping = spans
                .iter()
                .filter(|(s, f)| s <= start && start < f)
                .count();
            assert!(
                overlapping <= 2,
                "{overlapping} executions overlapped: {spans:?}"
            );
        }
    }

    /// Bad input: an unknown priority (422 naming the allowed ones), an unknown workflow (404),
    /// another user's job (404; admins reach it), malformed batches and filters (422).
    pub async fn bad_input_and_owner_scoping(h: Harness) {
        let alice = h.user("alice", &["user"]).await;
        let bob = h.user("bob", &["user"]).await;
        let def = create_definition(&h, &alice.key, "Chat", chat_graph()).await;

        let unknown = h
            .post(
                "/api/v1/jobs",
                Some(&alice.key),
                &json!({"workflow_id": def, "priority": "urgent"}),
            )
            .await;
        unknown.assert_problem(422);
        assert_eq!(
            unknown.body["detail"],
            "unknown priority `urgent`; expected one of low, normal, high, critical"
        );
        let unknown = h
            .post(
                &format!("{W}/definitions/{def}/execute?async=true&priority=urgent"),
                Some(&alice.key),
                &json!({}),
            )
            .await;
        unknown.assert_problem(422);
        assert!(
            unknown.body["detail"]
                .as_str()
                .unwrap()
                .contains("low, normal, high, critical")
        );
        for body in [
            json!({"workflow_id": "01NOSUCHWORKFLOW0000000000"}),
            json!({"template_id": "no_such_template"}),
            json!({"workflow_id": def}),
        ] {
            // Bob cannot see Alice's private definition either.
            let answer = h.post("/api/v1/jobs", Some(&bob.key), &body).await;
            answer.assert_problem(404);
        }
        for body in [
            json!({}),
            json!({"workflow_id": def, "template_id": "general_chat"}),
            json!({"workflow_id": def, "max_attempts": 0}),
            json!({"workflow_id": def, "timeout_ms": -5}),
            json!({"workflow_id": def, "colour": "red"}),
        ] {
            h.post("/api/v1/jobs", Some(&alice.key), &body)
                .await
                .assert_problem(422);
        }
        for body in [
            json!({"workflow_id": def, "inputs": []}),
            json!({"workflow_id": def, "inputs": [{}], "concurrency": 0}),
            json!({"workflow_id": def, "inputs": [{}], "priority": "someday"}),
        ] {
            h.post("/api/v1/jobs/batch", Some(&alice.key), &body)
                .await
                .assert_problem(422);
        }
        assert_eq!(
            h.get("/api/v1/jobs?status=sleeping", Some(&alice.key))
                .await
                .status,
            422
        );
        assert_eq!(
            h.get("/api/v1/jobs?priority=2", Some(&alice.key))
                .await
                .status,
            422
        );
        assert_eq!(h.get("/api/v1/jobs", None).await.status, 401);
        assert_eq!(
            h.get("/api/v1/jobs", Some(&alice.key)).await.body["jobs"]
                .as_array()
                .unwrap()
                .len(),
            0,
            "nothing was written by the refused submissions"
        );

        let accepted = submit(&h, &alice.key, json!({"workflow_id": def})).await;
        let id = accepted["id"].as_str().unwrap();
        for (method, path) in [
            ("GET", format!("/api/v1/jobs/{id}")),
            ("POST", format!("/api/v1/jobs/{id}/cancel")),
            ("DELETE", format!("/api/v1/jobs/{id}")),
        ] {
            let body = (method == "POST").then(|| json!({}));
            h.send(method, &path, Some(&bob.key), body.as_ref())
                .await
                .assert_problem(404);
        }
        h.get("/api/v1/jobs/nope", Some(&alice.key))
            .await
            .assert_problem(404);
        let bobs = h.get("/api/v1/jobs", Some(&bob.key)).await;
        assert_eq!(bobs.body["jobs"].as_array().unwrap().len(), 0);
        assert_eq!(
            h.get("/api/v1/jobs/stats", Some(&bob.key)).await.body["total_jobs"],
            0
        );
        let admin = h.get(&format!("/api/v1/jobs/{id}"), Some(ADMIN_KEY)).await;
        assert_eq!(admin.status, 200);
        assert_eq!(admin.body["owner_id"], alice.id.as_str());
        wait_status(&h, &alice.key, id, "completed").await;
        assert_eq!(h.audit("job.submit").await.len(), 1);
    }
}

// ---------------------------------------------------------------------------------------------
// Restart: jobs enqueued on a server without workers run on the next one, highest priority
// first; a job whose definition was deleted meanwhile fails once, with a clear error.
// ---------------------------------------------------------------------------------------------

/// Where the two servers' store lives.
#[derive(Clone)]
enum Place {
    Sqlite(std::path::PathBuf),
    Postgres { url: String, schema: String },
}

impl Place {
    async fn open(&self) -> Arc<dyn Store> {
        match self {
            Place::Sqlite(path) => chatter_store::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap(),
            Place::Postgres { url, schema } => {
                let mut options = chatter_store::StoreOptions::default();
                options.pg_schema = Some(schema.clone());
                options.pg_pool_size = 4;
                chatter_store::connect_with(url, options)
                    .await
                    .expect("CHATTER_TEST_POSTGRES_URL is set but Postgres is not usable")
            }
        }
    }

    async fn clean(&self) {
        match self {
            Place::Sqlite(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
            }
            Place::Postgres { url, schema } => {
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
        }
    }
}

async fn serve(place: &Place, workers: usize) -> Harness {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = Server::start_with_store(config(workers), place.open().await)
        .await
        .unwrap();
    Harness {
        server,
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
    }
}

async fn jobs_survive_a_restart(place: Place) {
    let kept = place.clone();
    let outcome = tokio::spawn(async move { restart_case(&place).await }).await;
    kept.clean().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn restart_case(place: &Place) {
    let first = serve(place, 0).await;
    let alice = first.user("alice", &["user"]).await;
    let def = create_definition(&first, &alice.key, "Pause", delay_graph(50)).await;
    let doomed = create_definition(&first, &alice.key, "Doomed", chat_graph()).await;
    let mut ids = Vec::new();
    for priority in ["low", "normal", "critical", "high"] {
        let accepted = submit(
            &first,
            &alice.key,
            json!({"workflow_id": def, "priority": priority, "input": {"p": priority}}),
        )
        .await;
        assert_eq!(accepted["status"], "queued");
        ids.push((priority, accepted["id"].as_str().unwrap().to_owned()));
    }
    let orphan = submit(&first, &alice.key, json!({"workflow_id": doomed})).await;
    let deleted = first
        .send(
            "DELETE",
            &format!("{W}/definitions/{doomed}"),
            Some(&alice.key),
            None,
        )
        .await;
    assert!(deleted.status < 300, "{}", deleted.text);
    let stats = first.get("/api/v1/jobs/stats", Some(&alice.key)).await;
    assert_eq!(stats.body["queued_jobs"], 5, "{}", stats.text);
    first.server.shutdown().await.unwrap();

    let second = serve(place, 1).await;
    let mut started = Vec::new();
    for (priority, id) in &ids {
        let done = wait_status(&second, &alice.key, id, "completed").await;
        let record = execution(second.store(), done["execution_id"].as_str().unwrap()).await;
        assert_eq!(record.input["p"], *priority);
        started.push((record.started_at.unwrap(), *priority));
    }
    started.sort_unstable();
    let order: Vec<&str> = started.iter().map(|(_, p)| *p).collect();
    assert_eq!(order, ["critical", "high", "normal", "low"]);

    let orphan_id = orphan["id"].as_str().unwrap();
    let failed = wait_status(&second, &alice.key, orphan_id, "failed").await;
    assert_eq!(
        failed["error"],
        format!("workflow definition `{doomed}` was deleted before the job ran")
    );
    assert_eq!(failed["attempts"], 1, "no retry loop");
    second.server.shutdown().await.unwrap();
}

/// A worker died holding a job whose execution had started: when the job's lease expires,
/// a worker of the next server takes the job over (attempt 2), and the same execution is
/// resumed to its end, not started again.
async fn a_dead_workers_job_is_taken_over(place: Place) {
    let kept = place.clone();
    let outcome = tokio::spawn(async move { takeover_case(&place).await }).await;
    kept.clean().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn takeover_case(place: &Place) {
    use chatter_core::store::{ExecutionKind, NewExecution};

    let first = serve(place, 0).await;
    let alice = first.user("alice", &["user"]).await;
    let def = create_definition(&first, &alice.key, "Chat", chat_graph()).await;
    let accepted = submit(
        &first,
        &alice.key,
        json!({"workflow_id": def, "input": {"message": "hello"}}),
    )
    .await;
    let job_id = accepted["id"].as_str().unwrap().to_owned();
    let execution_id = accepted["execution_id"].as_str().unwrap().to_owned();
    // What a worker that died mid-run leaves: the job claimed, its execution created and
    // running, both leases (1 ms) expired.
    let store = first.store().clone();
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let claimed = store
        .claim_job(chatter_http::server::jobs::QUEUE, "dead-worker", 1, now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (claimed.id.as_str(), claimed.attempts),
        (job_id.as_str(), 1)
    );
    store
        .create_execution(NewExecution {
            id: Some(execution_id.clone()),
            owner_id: alice.id.clone(),
            definition_id: Some(def.clone()),
            template_id: None,
            kind: ExecutionKind::Definition,
            input: json!({"message": "hello"}),
            params: json!({"definition_id": def}),
            conversation_id: None,
            graph: None,
        })
        .await
        .unwrap();
    store
        .set_execution_status(&execution_id, ExecutionStatus::Running, now)
        .await
        .unwrap();
    assert!(
        store
            .acquire_lease(&execution_id, "dead-worker", now + 1, now)
            .await
            .unwrap()
    );
    first.server.shutdown().await.unwrap();

    let second = serve(place, 1).await;
    let done = wait_status(&second, &alice.key, &job_id, "completed").await;
    assert_eq!(done["execution_id"], execution_id.as_str(), "{done}");
    assert_eq!(done["attempts"], 2, "{done}");
    assert_eq!(done["result"]["response"], OFFLINE_REPLY);
    let record = execution(second.store(), &execution_id).await;
    assert_eq!(record.status, ExecutionStatus::Completed);
    assert_ne!(record.lease_owner.as_deref(), Some("dead-worker"));
    let steps = second
        .get(
            &format!("{W}/executions/{execution_id}/steps"),
            Some(&alice.key),
        )
        .await;
    let nodes: Vec<&str> = steps.body["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["node_id"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, ["start", "chat", "end"], "each node ran once");
    let runs = second
        .store()
        .list_executions(
            &chatter_core::store::ExecutionFilter {
                owner_id: Some(alice.id.clone()),
                ..Default::default()
            },
            chatter_core::store::Page::new(10, 0),
        )
        .await
        .unwrap();
    assert_eq!(runs.len(), 1, "no second execution was started");
    second.server.shutdown().await.unwrap();
}

macro_rules! cases {
    ($($case:ident => $workers:expr),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                crate::common::run_sqlite_with(super::config($workers), super::cases::$case).await;
            })*

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn jobs_survive_a_restart() {
                let path = std::env::temp_dir()
                    .join(format!("chatter-jobs-{}.db", ulid::Ulid::new()));
                super::jobs_survive_a_restart(super::Place::Sqlite(path)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_dead_workers_job_is_taken_over() {
                let path = std::env::temp_dir()
                    .join(format!("chatter-jobs-{}.db", ulid::Ulid::new()));
                super::a_dead_workers_job_is_taken_over(super::Place::Sqlite(path)).await;
            }
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                crate::common::run_postgres_with(super::config($workers), super::cases::$case).await;
            })*

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn jobs_survive_a_restart() {
                let Some(url) = crate::common::postgres_url() else {
                    println!("skipped: CHATTER_TEST_POSTGRES_URL not set");
                    return;
                };
                let schema = format!("chatter_jobs_{}", ulid::Ulid::new().to_string().to_lowercase());
                super::jobs_survive_a_restart(super::Place::Postgres { url, schema }).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_dead_workers_job_is_taken_over() {
                let Some(url) = crate::common::postgres_url() else {
                    println!("skipped: CHATTER_TEST_POSTGRES_URL not set");
                    return;
                };
                let schema = format!("chatter_jobs_{}", ulid::Ulid::new().to_string().to_lowercase());
                super::a_dead_workers_job_is_taken_over(super::Place::Postgres { url, schema }).await;
            }
        }
    };
}

cases!(
    async_execute_completes => 2,
    retries_with_backoff_then_fails => 2,
    timeout_cancels_the_attempt => 1,
    cancel_queued_and_running => 1,
    batch_respects_its_concurrency_cap => 4,
    bad_input_and_owner_scoping => 2,
);
