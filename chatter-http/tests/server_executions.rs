//! The native execution endpoints over real HTTP: the events stream (SSE framing, heartbeats,
//! `Last-Event-ID` resume across an approval), approve/resume/steps/fork/cancel, their RBAC
//! (another user's execution is 404), an approval that survives a server restart, and racing
//! approvals that run the execution once. Every
//! case runs on SQLite and Postgres.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::Harness;

const W: &str = "/api/v1/workflows";

/// start → approval `ask` → end.
fn approval_graph() -> Value {
    json!({
        "nodes": [
            {"id": "start", "type": "start", "position": {"x": 0, "y": 0},
             "data": {"label": "Start", "nodeType": "start"}},
            {"id": "ask", "type": "approval", "position": {"x": 200, "y": 0},
             "data": {"label": "Ask", "nodeType": "approval",
                      "config": {"question": "Ship it?", "allowed_decisions": ["approve", "reject"]}}},
            {"id": "end", "type": "end", "position": {"x": 400, "y": 0},
             "data": {"label": "End", "nodeType": "end"}}
        ],
        "edges": [
            {"id": "e1", "source": "start", "target": "ask"},
            {"id": "e2", "source": "ask", "target": "end"}
        ]
    })
}

/// One SSE frame: `id`, `event`, `data` (parsed), or a comment.
#[derive(Debug, Clone, PartialEq)]
enum Frame {
    Event { id: i64, event: String, data: Value },
    Comment(String),
}

fn parse_frame(block: &str) -> Frame {
    if let Some(comment) = block.strip_prefix(':') {
        return Frame::Comment(comment.trim().to_owned());
    }
    let (mut id, mut event, mut data) = (None, None, None);
    for line in block.lines() {
        let (key, value) = line.split_once(':').unwrap();
        let value = value.strip_prefix(' ').unwrap_or(value);
        match key {
            "id" => id = Some(value.parse::<i64>().unwrap()),
            "event" => event = Some(value.to_owned()),
            "data" => data = Some(serde_json::from_str::<Value>(value).unwrap()),
            other => panic!("unexpected SSE field `{other}` in {block:?}"),
        }
    }
    Frame::Event {
        id: id.unwrap(),
        event: event.unwrap(),
        data: data.unwrap(),
    }
}

/// Opens the events stream; reads frames until `stop` says so or the stream ends.
async fn read_events(
    h: &Harness,
    id: &str,
    token: &str,
    last_event_id: Option<i64>,
    mut stop: impl FnMut(&[Frame]) -> bool,
) -> (Vec<Frame>, bool) {
    let mut request = h
        .client
        .get(h.url(&format!("{W}/executions/{id}/events")))
        .bearer_auth(token);
    if let Some(last) = last_event_id {
        request = request.header("Last-Event-ID", last.to_string());
    }
    let mut response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let mut text = String::new();
    let mut frames = Vec::new();
    loop {
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            frames.push(parse_frame(block.trim_end()));
            if stop(&frames) {
                return (frames, false);
            }
        }
        match tokio::time::timeout(Duration::from_secs(60), response.chunk())
            .await
            .expect("the stream stalled")
            .unwrap()
        {
            Some(chunk) => text.push_str(std::str::from_utf8(&chunk).unwrap()),
            None => {
                assert!(text.trim().is_empty(), "unterminated frame {text:?}");
                return (frames, true);
            }
        }
    }
}

fn events_of(frames: &[Frame]) -> Vec<(i64, String, Value)> {
    frames
        .iter()
        .filter_map(|f| match f {
            Frame::Event { id, event, data } => Some((*id, event.clone(), data.clone())),
            Frame::Comment(_) => None,
        })
        .collect()
}

async fn start_waiting(h: &Harness, token: &str) -> String {
    let run = h
        .post(
            &format!("{W}/definitions/custom/execute?message=hello"),
            Some(token),
            &approval_graph(),
        )
        .await;
    assert_eq!(run.status, 200, "{}", run.text);
    assert_eq!(run.body["status"], "waiting", "{}", run.text);
    run.body["id"].as_str().unwrap().to_owned()
}

mod cases {
    use super::*;

    pub async fn events_stream_resumes_across_an_approval(h: Harness) {
        let alice = h.user("alice", &["user"]).await;
        let bob = h.user("bob", &["user"]).await;
        let id = start_waiting(&h, &alice.key).await;

        // Up to the pause: every stored event, then heartbeats while it waits.
        let (first, ended) = read_events(&h, &id, &alice.key, None, |frames| {
            frames
                .iter()
                .any(|f| *f == Frame::Comment("keep-alive".into()))
        })
        .await;
        assert!(!ended, "the stream of a waiting execution stays open");
        let first = events_of(&first);
        let ids: Vec<i64> = first.iter().map(|e| e.0).collect();
        assert_eq!(ids, (1..=ids.len() as i64).collect::<Vec<_>>());
        for (seq, event, data) in &first {
            assert_eq!(data["seq"], *seq);
            assert_eq!(data["type"], event.as_str());
        }
        assert_eq!(first[0].1, "execution_started");
        let (last_seen, interrupted, payload) = first.last().unwrap().clone();
        assert_eq!(interrupted, "interrupted", "{first:?}");
        assert_eq!(payload["payload"]["node_id"], "ask", "{payload}");

        // Another user's execution does not exist for them.
        for path in ["events", "steps"] {
            h.get(&format!("{W}/executions/{id}/{path}"), Some(&bob.key))
                .await
                .assert_problem(404);
        }
        for path in ["resume", "cancel"] {
            h.post(
                &format!("{W}/executions/{id}/{path}"),
                Some(&bob.key),
                &json!({}),
            )
            .await
            .assert_problem(404);
        }
        h.post(
            &format!("{W}/executions/{id}/approve"),
            Some(&bob.key),
            &json!({"decision": "approve"}),
        )
        .await
        .assert_problem(404);

        // A decision that is not allowed changes nothing.
        let refused = h
            .post(
                &format!("{W}/executions/{id}/approve"),
                Some(&alice.key),
                &json!({"decision": "maybe", "input": {}}),
            )
            .await;
        refused.assert_problem(422);
        assert!(refused.body["detail"].as_str().unwrap().contains("maybe"));
        let record = h.store().get_execution(&id).await.unwrap().unwrap();
        assert_eq!(record.status.as_str(), "waiting");
        assert_eq!(record.last_event_seq, last_seen);

        // A Last-Event-ID from the future is refused.
        h.get(
            &format!("{W}/executions/{id}/events?after={}", last_seen + 5),
            Some(&alice.key),
        )
        .await
        .assert_problem(422);

        let approved = h
            .post(
                &format!("{W}/executions/{id}/approve"),
                Some(&alice.key),
                &json!({"decision": "approve", "input": {"note": "ok"}, "node_id": "ask"}),
            )
            .await;
        assert_eq!(approved.status, 200, "{}", approved.text);
        assert_eq!(approved.body["status"], "completed");

        // Resuming from the last id seen: the rest, no gap, no duplicate, then the end.
        let (rest, ended) = read_events(&h, &id, &alice.key, Some(last_seen), |_| false).await;
        assert!(ended);
        let rest = events_of(&rest);
        assert_eq!(rest[0].0, last_seen + 1);
        assert_eq!(rest.last().unwrap().1, "execution_completed");
        let stored = h.store().list_events(&id, 0, 10_000).await.unwrap();
        let joined: Vec<(i64, String)> = first
            .iter()
            .chain(rest.iter())
            .map(|e| (e.0, e.1.clone()))
            .collect();
        let expected: Vec<(i64, String)> = stored
            .iter()
            .map(|e| (e.seq, e.event_type.clone()))
            .collect();
        assert_eq!(joined, expected);

        // Steps: the approval's step records the decision in the state.
        let steps = h
            .get(&format!("{W}/executions/{id}/steps"), Some(&alice.key))
            .await;
        assert_eq!(steps.status, 200, "{}", steps.text);
        let list = steps.body["steps"].as_array().unwrap();
        let numbers: Vec<i64> = list.iter().map(|s| s["step"].as_i64().unwrap()).collect();
        assert!(
            numbers.windows(2).all(|w| w[0] < w[1]) && numbers[0] == 1,
            "{}",
            steps.text
        );
        let nodes: Vec<&str> = list
            .iter()
            .map(|s| s["node_id"].as_str().unwrap())
            .collect();
        assert_eq!(nodes, ["start", "ask", "end"], "{}", steps.text);
        let last = list.last().unwrap();
        assert_eq!(last["node_id"], "end");
        let decided = list
            .iter()
            .find(|s| s["node_id"] == "ask" && s["status"] == "completed");
        assert_eq!(
            decided.unwrap()["state"]["variables"]["ask"]["decision"],
            "approve",
            "{}",
            steps.text
        );

        // An ended execution cannot be resumed, approved again or cancelled.
        h.post(
            &format!("{W}/executions/{id}/resume"),
            Some(&alice.key),
            &json!({}),
        )
        .await
        .assert_problem(422);
        h.post(
            &format!("{W}/executions/{id}/cancel"),
            Some(&alice.key),
            &json!({}),
        )
        .await
        .assert_problem(409);

        // Fork from step 1: a new execution that waits at the approval again; cancel it.
        let forked = h
            .post(
                &format!("{W}/executions/{id}/fork"),
                Some(&alice.key),
                &json!({"step": 1, "variables": {"topic": "forked"}}),
            )
            .await;
        assert_eq!(forked.status, 200, "{}", forked.text);
        let fork_id = forked.body["id"].as_str().unwrap().to_owned();
        assert_ne!(fork_id, id);
        assert_eq!(forked.body["status"], "waiting");
        h.post(
            &format!("{W}/executions/{id}/fork"),
            Some(&alice.key),
            &json!({"step": 99}),
        )
        .await
        .assert_problem(422);
        let cancelled = h
            .post(
                &format!("{W}/executions/{fork_id}/cancel"),
                Some(&alice.key),
                &json!({}),
            )
            .await;
        assert_eq!(cancelled.status, 200, "{}", cancelled.text);
        assert_eq!(cancelled.body["status"], "cancelled");
        // The cancellation continues the fork's event sequence and ends it; the lease is gone.
        let fork = h.store().get_execution(&fork_id).await.unwrap().unwrap();
        assert_eq!(fork.error.as_deref(), Some("cancelled through the API"));
        assert_eq!(fork.lease_owner, None);
        let events = h.store().list_events(&fork_id, 0, 1000).await.unwrap();
        let last = events.last().unwrap();
        assert_eq!(last.event_type, "execution_cancelled");
        assert_eq!(last.payload["reason"], "cancelled through the API");
        assert_eq!(last.seq, events.len() as i64);
        let original = h.store().get_execution(&id).await.unwrap().unwrap();
        assert_eq!(original.status.as_str(), "completed");
    }

    pub async fn rejection_takes_effect_and_admin_reaches_any(h: Harness) {
        let alice = h.user("alice", &["user"]).await;
        let id = start_waiting(&h, &alice.key).await;
        let paused = h.store().get_execution(&id).await.unwrap().unwrap();
        // A stream opened while the execution waits follows it live: the admin rejects it
        // meanwhile, and the stream carries the rest and ends.
        let client = h.client.clone();
        let url = h.url(&format!("{W}/executions/{id}/approve"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let decide = tokio::spawn(async move {
            rx.await.unwrap();
            let response = client
                .post(url)
                .bearer_auth(crate::common::ADMIN_KEY)
                .header("content-type", "application/json")
                .body(json!({"decision": "reject"}).to_string())
                .send()
                .await
                .unwrap();
            crate::common::answer(response).await
        });
        let mut tx = Some(tx);
        let (frames, ended) =
            read_events(&h, &id, &alice.key, Some(paused.last_event_seq), |frames| {
                // The first heartbeat: the stream is open and waiting; now decide.
                if frames.iter().any(|f| matches!(f, Frame::Comment(_)))
                    && let Some(tx) = tx.take()
                {
                    tx.send(()).unwrap();
                }
                false
            })
            .await;
        assert!(ended);
        let rejected = decide.await.unwrap();
        assert_eq!(rejected.status, 200, "{}", rejected.text);
        let live = events_of(&frames);
        let stored = h
            .store()
            .list_events(&id, paused.last_event_seq, 10_000)
            .await
            .unwrap();
        assert!(!stored.is_empty());
        assert_eq!(
            live.iter().map(|e| e.0).collect::<Vec<_>>(),
            stored.iter().map(|e| e.seq).collect::<Vec<_>>()
        );
        assert!(live.last().unwrap().1.starts_with("execution_"), "{live:?}");
        let steps = h.store().list_node_runs(&id).await.unwrap();
        assert!(steps.iter().any(|r| r.node_id == "ask"), "{steps:?}");
        let record = h.store().get_execution(&id).await.unwrap().unwrap();
        assert!(record.status.is_terminal());
        // Anonymous callers are refused.
        h.get(&format!("{W}/executions/{id}/events"), None)
            .await
            .assert_problem(401);
    }
}

mod orphan {
    use super::*;
    use chatter_core::store::{ExecutionKind, ExecutionRecord, ExecutionStatus, NewExecution};

    /// start → a `delay` node `wait` of `delay_ms` → end, as the old frontend sends it.
    fn delay_graph(delay_ms: u64) -> Value {
        json!({
            "nodes": [
                {"id": "start", "type": "start", "position": {"x": 0, "y": 0},
                 "data": {"label": "Start", "nodeType": "start"}},
                {"id": "wait", "type": "delay", "position": {"x": 200, "y": 0},
                 "data": {"label": "Wait", "nodeType": "delay",
                          "config": {"delay_type": "fixed", "delay_ms": delay_ms}}},
                {"id": "end", "type": "end", "position": {"x": 400, "y": 0},
                 "data": {"label": "End", "nodeType": "end"}}
            ],
            "edges": [
                {"id": "e1", "source": "start", "target": "wait"},
                {"id": "e2", "source": "wait", "target": "end"}
            ]
        })
    }

    /// The first `running` execution of `owner` in the store, waited for (up to 30 s).
    async fn wait_for_running(h: &Harness, owner: &str) -> ExecutionRecord {
        let filter = chatter_core::store::ExecutionFilter {
            owner_id: Some(owner.to_owned()),
            ..Default::default()
        };
        for _ in 0..600 {
            let listed = h
                .store()
                .list_executions(&filter, chatter_core::store::Page::new(10, 0))
                .await
                .unwrap();
            if let Some(r) = listed
                .into_iter()
                .find(|r| r.status == ExecutionStatus::Running)
            {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the execution never started");
    }

    /// A client that hangs up on `execute` before its answer leaves the execution running to
    /// its end on the server, at once (not after its 30 s lease expired and the resumer took
    /// it over).
    pub async fn a_client_hanging_up_leaves_the_execution_running(h: Harness) {
        let alice = h.user("alice", &["user"]).await;
        let graph = delay_graph(500);
        let request = h
            .client
            .post(h.url(&format!("{W}/definitions/custom/execute")))
            .bearer_auth(alice.key.clone())
            .header("content-type", "application/json")
            .body(graph.to_string())
            .send();
        let client = tokio::spawn(request);
        let running = wait_for_running(&h, &alice.id).await;
        // The client goes away: its request (and connection) is dropped mid-execution.
        client.abort();
        assert!(client.await.unwrap_err().is_cancelled());
        let mut ended = None;
        for _ in 0..200 {
            let record = h.store().get_execution(&running.id).await.unwrap().unwrap();
            if record.status != ExecutionStatus::Running {
                ended = Some(record);
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let ended = ended.expect("the execution stopped with its client");
        assert_eq!(ended.status, ExecutionStatus::Completed);
        assert_eq!(ended.lease_owner, None);
        let runs = h.store().list_node_runs(&running.id).await.unwrap();
        let ran: Vec<&str> = runs.iter().map(|r| r.node_id.as_str()).collect();
        assert_eq!(ran, ["start", "wait", "end"]);
    }

    /// An execution left `running` by a dead server (its lease expired) is resumed by the
    /// server's periodic `resume_due` and completes.
    pub async fn a_dead_servers_execution_is_resumed(h: Harness) {
        let alice = h.user("alice", &["user"]).await;
        // The graph of an ad-hoc run, as the tracker records it.
        let graph = json!({
            "nodes": [
                {"id": "start", "type": "start", "position": {"x": 0, "y": 0},
                 "data": {"label": "Start", "nodeType": "start"}},
                {"id": "chat", "type": "model", "position": {"x": 200, "y": 0},
                 "data": {"label": "Chat", "nodeType": "model"}},
                {"id": "end", "type": "end", "position": {"x": 400, "y": 0},
                 "data": {"label": "End", "nodeType": "end"}}
            ],
            "edges": [
                {"id": "e1", "source": "start", "target": "chat"},
                {"id": "e2", "source": "chat", "target": "end"}
            ]
        });
        let done = h
            .post(
                &format!("{W}/definitions/custom/execute?message=hi"),
                Some(&alice.key),
                &graph,
            )
            .await;
        assert_eq!(done.status, 200, "{}", done.text);
        let template = h
            .store()
            .get_execution(done.body["id"].as_str().unwrap())
            .await
            .unwrap()
            .unwrap();
        let store = h.store();
        let orphan = store
            .create_execution(NewExecution {
                id: None,
                owner_id: alice.id.clone(),
                definition_id: None,
                template_id: None,
                kind: ExecutionKind::Adhoc,
                input: json!({"message": "hi"}),
                params: json!({}),
                conversation_id: None,
                graph: template.graph.clone(),
            })
            .await
            .unwrap();
        store
            .set_execution_status(&orphan.id, ExecutionStatus::Running, 1)
            .await
            .unwrap();
        assert!(
            store
                .acquire_lease(&orphan.id, "dead-worker", 2, 1)
                .await
                .unwrap()
        );
        let mut record = store.get_execution(&orphan.id).await.unwrap().unwrap();
        for _ in 0..600 {
            if record.status.is_terminal() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            record = store.get_execution(&orphan.id).await.unwrap().unwrap();
        }
        assert_eq!(record.status.as_str(), "completed", "{record:?}");
        assert_eq!(
            record.response.as_deref(),
            Some(chatter_http::server::OFFLINE_REPLY)
        );
        assert_ne!(record.lease_owner.as_deref(), Some("dead-worker"));
        let steps = h
            .get(
                &format!("{W}/executions/{}/steps", orphan.id),
                Some(&alice.key),
            )
            .await;
        let nodes: Vec<&str> = steps.body["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["node_id"].as_str().unwrap())
            .collect();
        assert_eq!(nodes, ["start", "chat", "end"]);
    }

    /// `cancel` reaches an execution running in this server: it stops and is recorded
    /// `cancelled`; the request that started it answers the cancelled execution.
    pub async fn cancel_stops_a_running_execution(h: Harness) {
        let alice = h.user("alice", &["user"]).await;
        let graph = delay_graph(3_600_000);
        let client = h.client.clone();
        let url = h.url(&format!("{W}/definitions/custom/execute"));
        let key = alice.key.clone();
        let run = tokio::spawn(async move {
            let response = client
                .post(url)
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body(graph.to_string())
                .send()
                .await
                .unwrap();
            crate::common::answer(response).await
        });
        let running = wait_for_running(&h, &alice.id).await;
        let cancelled = h
            .post(
                &format!("{W}/executions/{}/cancel", running.id),
                Some(&alice.key),
                &json!({}),
            )
            .await;
        assert_eq!(cancelled.status, 200, "{}", cancelled.text);
        assert_eq!(cancelled.body["status"], "cancelled");
        let answered = run.await.unwrap();
        assert_eq!(
            answered.body["id"],
            running.id.as_str(),
            "{}",
            answered.text
        );
        assert_eq!(answered.body["status"], "cancelled", "{}", answered.text);
        let record = h.store().get_execution(&running.id).await.unwrap().unwrap();
        assert_eq!(record.status, ExecutionStatus::Cancelled);
    }
}

mod race {
    use super::common::Answer;
    use super::*;
    use chatter_core::store::NodeRunStatus;

    /// start → approval `ask` → a 1.5 s delay `wait` → end: the resumed run stays live a
    /// while, so concurrent approvals overlap it.
    fn slow_approval_graph() -> Value {
        json!({
            "nodes": [
                {"id": "start", "type": "start", "position": {"x": 0, "y": 0},
                 "data": {"label": "Start", "nodeType": "start"}},
                {"id": "ask", "type": "approval", "position": {"x": 200, "y": 0},
                 "data": {"label": "Ask", "nodeType": "approval",
                          "config": {"question": "Ship it?", "allowed_decisions": ["approve", "reject"]}}},
                {"id": "wait", "type": "delay", "position": {"x": 400, "y": 0},
                 "data": {"label": "Wait", "nodeType": "delay",
                          "config": {"delay_type": "fixed", "delay_ms": 1500}}},
                {"id": "end", "type": "end", "position": {"x": 600, "y": 0},
                 "data": {"label": "End", "nodeType": "end"}}
            ],
            "edges": [
                {"id": "e1", "source": "start", "target": "ask"},
                {"id": "e2", "source": "ask", "target": "wait"},
                {"id": "e3", "source": "wait", "target": "end"}
            ]
        })
    }

    /// Runs [`slow_approval_graph`] for `key` until it waits at its approval; its id.
    async fn waiting_execution(h: &Harness, key: &str) -> String {
        let run = h
            .post(
                &format!("{W}/definitions/custom/execute?message=hello"),
                Some(key),
                &slow_approval_graph(),
            )
            .await;
        assert_eq!(run.status, 200, "{}", run.text);
        assert_eq!(run.body["status"], "waiting", "{}", run.text);
        run.body["id"].as_str().unwrap().to_owned()
    }

    /// One request per action on execution `id`, all at once: `approve` (with the decision
    /// the approval awaits) or `resume` (without one); each answer with its action.
    async fn race(
        h: &Harness,
        key: &str,
        id: &str,
        actions: &[&'static str],
    ) -> Vec<(&'static str, Answer)> {
        let requests = actions.iter().map(|&action| {
            let body = match action {
                "approve" => json!({"decision": "approve"}),
                _ => json!({}),
            };
            let path = format!("{W}/executions/{id}/{action}");
            async move { (action, h.post(&path, Some(key), &body).await) }
        });
        futures::future::join_all(requests).await
    }

    /// Several approve (and resume) requests racing on one waiting execution: exactly one
    /// runs it (200, completed); every other is refused (409 while it runs, 422 once it has
    /// moved on) and nothing runs twice: one completed node run per node, one
    /// `execution_completed` event.
    pub async fn racing_approvals_run_it_once(h: Harness) {
        let alice = h.user("alice", &["user"]).await;
        let id = waiting_execution(&h, &alice.key).await;
        let actions = ["approve", "approve", "approve", "resume"];
        let answers: Vec<Answer> = race(&h, &alice.key, &id, &actions)
            .await
            .into_iter()
            .map(|(_, answer)| answer)
            .collect();
        let mut ran = 0;
        for answer in &answers {
            match answer.status {
                200 => {
                    ran += 1;
                    assert_eq!(answer.body["status"], "completed", "{}", answer.text);
                }
                409 | 422 => assert_eq!(
                    answer.headers["content-type"].to_str().unwrap(),
                    "application/problem+json",
                    "{}",
                    answer.text
                ),
                other => panic!("unexpected answer {other}: {}", answer.text),
            }
        }
        assert_eq!(ran, 1, "{answers:#?}");
        let conflicts: Vec<&str> = answers
            .iter()
            .filter(|a| a.status == 409)
            .map(|a| a.body["detail"].as_str().unwrap())
            .collect();
        for detail in conflicts {
            // Not a storage conflict surfacing after a second run already went ahead.
            assert!(
                detail.contains("already running in this server"),
                "{detail}"
            );
        }

        // One resume went ahead, in the audit trail too.
        let audit = h
            .store()
            .list_audit(
                &chatter_core::store::AuditFilter {
                    resource_id: Some(id.clone()),
                    ..Default::default()
                },
                chatter_core::store::Page::new(100, 0),
            )
            .await
            .unwrap();
        let resumes = audit
            .iter()
            .filter(|a| a.action == "execution.resume")
            .count();
        assert_eq!(resumes, 1, "{audit:#?}");

        let record = h.store().get_execution(&id).await.unwrap().unwrap();
        assert_eq!(record.status.as_str(), "completed");
        let runs = h.store().list_node_runs(&id).await.unwrap();
        let mut completed: Vec<&str> = runs
            .iter()
            .filter(|r| r.status == NodeRunStatus::Completed)
            .map(|r| r.node_id.as_str())
            .collect();
        completed.sort_unstable();
        assert_eq!(completed, ["ask", "end", "start", "wait"], "{runs:#?}");
        let events = h.store().list_events(&id, 0, 1000).await.unwrap();
        let ends = events
            .iter()
            .filter(|e| e.event_type == "execution_completed")
            .count();
        assert_eq!(ends, 1);
        let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
        let expected: Vec<i64> = (1..=i64::try_from(events.len()).unwrap()).collect();
        assert_eq!(seqs, expected, "the event sequence has no gap or repeat");
    }

    /// Requests that are to be refused (resumes without the decision the approval awaits)
    /// racing one valid approval never turn it away: each is answered 422 without registering
    /// the execution, and the approval runs it (200, completed), every time.
    pub async fn refused_resumes_do_not_turn_away_an_approval(h: Harness) {
        let alice = h.user("alice", &["user"]).await;
        for _ in 0..3 {
            let id = waiting_execution(&h, &alice.key).await;
            let mut actions = ["resume"; 9];
            actions[4] = "approve";
            for (action, answer) in race(&h, &alice.key, &id, &actions).await {
                match action {
                    "approve" => {
                        assert_eq!(answer.status, 200, "{}", answer.text);
                        assert_eq!(answer.body["status"], "completed", "{}", answer.text);
                    }
                    _ => {
                        // Refused for what it is (no decision, or not waiting any more once
                        // the approval went ahead), never as a conflict.
                        assert_eq!(answer.status, 422, "{}", answer.text);
                    }
                }
            }
        }
    }
}

mod sqlite {
    use super::common::run_sqlite_with;

    fn config() -> chatter_http::server::ServerConfig {
        let mut config = super::common::config();
        config.sse_heartbeat = std::time::Duration::from_millis(50);
        config.resume_interval = std::time::Duration::from_millis(100);
        config
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_stream_resumes_across_an_approval() {
        run_sqlite_with(
            config(),
            super::cases::events_stream_resumes_across_an_approval,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_servers_execution_is_resumed() {
        run_sqlite_with(config(), super::orphan::a_dead_servers_execution_is_resumed).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancel_stops_a_running_execution() {
        run_sqlite_with(config(), super::orphan::cancel_stops_a_running_execution).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_hanging_up_leaves_the_execution_running() {
        run_sqlite_with(
            config(),
            super::orphan::a_client_hanging_up_leaves_the_execution_running,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_approvals_run_it_once() {
        run_sqlite_with(config(), super::race::racing_approvals_run_it_once).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_resumes_do_not_turn_away_an_approval() {
        run_sqlite_with(
            config(),
            super::race::refused_resumes_do_not_turn_away_an_approval,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rejection_takes_effect_and_admin_reaches_any() {
        run_sqlite_with(
            config(),
            super::cases::rejection_takes_effect_and_admin_reaches_any,
        )
        .await;
    }

    /// A waiting execution outlives its server: a new server on the same file approves it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_approval_survives_a_restart() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let path = std::env::temp_dir().join(format!("chatter-http2-{}.db", ulid::Ulid::new()));
        let mut config = config();
        config.db = format!("sqlite://{}", path.display());
        let client = reqwest::Client::builder().no_proxy().build().unwrap();

        let first = chatter_http::server::Server::start(config.clone())
            .await
            .unwrap();
        let h = super::Harness {
            server: first,
            client: client.clone(),
        };
        let id = super::start_waiting(&h, super::common::ADMIN_KEY).await;
        h.server.shutdown().await.unwrap();

        let second = chatter_http::server::Server::start(config).await.unwrap();
        assert_eq!(second.initial_admin_key(), None, "the users were kept");
        let h = super::Harness {
            server: second,
            client,
        };
        let approved = h
            .post(
                &format!("{}/executions/{id}/approve", super::W),
                Some(super::common::ADMIN_KEY),
                &serde_json::json!({"decision": "approve"}),
            )
            .await;
        assert_eq!(approved.status, 200, "{}", approved.text);
        assert_eq!(approved.body["status"], "completed");
        let read = h
            .get(
                &format!("{}/executions/{id}/steps", super::W),
                Some(super::common::ADMIN_KEY),
            )
            .await;
        assert_eq!(read.status, 200);
        assert_eq!(
            read.body["steps"].as_array().unwrap().last().unwrap()["node_id"],
            "end"
        );
        h.server.shutdown().await.unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
}

mod postgres {
    use super::common::run_postgres_with;

    fn config() -> chatter_http::server::ServerConfig {
        let mut config = super::common::config();
        config.sse_heartbeat = std::time::Duration::from_millis(50);
        config.resume_interval = std::time::Duration::from_millis(100);
        config
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_stream_resumes_across_an_approval() {
        run_postgres_with(
            config(),
            super::cases::events_stream_resumes_across_an_approval,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_servers_execution_is_resumed() {
        run_postgres_with(config(), super::orphan::a_dead_servers_execution_is_resumed).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancel_stops_a_running_execution() {
        run_postgres_with(config(), super::orphan::cancel_stops_a_running_execution).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_hanging_up_leaves_the_execution_running() {
        run_postgres_with(
            config(),
            super::orphan::a_client_hanging_up_leaves_the_execution_running,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_approvals_run_it_once() {
        run_postgres_with(config(), super::race::racing_approvals_run_it_once).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_resumes_do_not_turn_away_an_approval() {
        run_postgres_with(
            config(),
            super::race::refused_resumes_do_not_turn_away_an_approval,
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rejection_takes_effect_and_admin_reaches_any() {
        run_postgres_with(
            config(),
            super::cases::rejection_takes_effect_and_admin_reaches_any,
        )
        .await;
    }
}
