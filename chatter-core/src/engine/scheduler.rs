//! The scheduler: runs one execution of a [`Plan`] (DESIGN §5).
//!
//! One task drives the execution. Node runs are futures polled concurrently by that task (no
//! spawn per step), so a step costs a few index look-ups and two events. Edge resolutions go
//! through a FIFO work list (no recursion), which also carries dead-path propagation.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::FutureExt;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::durable::{RecordedOutcome, RecordedRun, Replay, StepWriter, new_event, route_to_json};
use super::events::EventLog;
use super::node::{NodeContext, NodeFailure, NodeOutput, Route, Services, SubgraphRunner};
use super::observe::EngineObserver;
use super::plan::{EdgeRole, Join, Plan, PlanNode};
use super::policy::{class_name, fnv};
use super::result::{ExecutionFailure, ExecutionResult, ExecutionStatus, NodeRun, NodeRunStatus};
use super::{Engine, Limits, RunOptions};
use crate::cancel::CancelToken;
use crate::definition::NodeSpec;
use crate::error::{Error, ErrorClass, Result};
use crate::event::{EventKind, EventSink};
use crate::model::Role;
use crate::state::{ErrorRecord, State, StateDelta};

/// The most events / node runs reserved up front from a plan's last run (larger runs grow).
const SIZE_HINT_CAP: usize = 16 * 1024;

const PENDING: u8 = 0;
const TAKEN: u8 = 1;
const DEAD: u8 = 2;

/// One scheduled node run.
#[derive(Debug, Clone)]
struct Activation {
    node: u32,
    iteration: u32,
    /// The first attempt number of this run (handler retries continue the count).
    attempt: u32,
    /// For an error handler: the failure it handles.
    failure: Option<Arc<NodeFailure>>,
    /// For an error handler: the failed node, its iteration and last attempt.
    failed: Option<(u32, u32, u32)>,
    /// For a node re-run by an error handler: the handler and the retries made so far.
    handler_retry: Option<(u32, u32)>,
}

impl Activation {
    fn new(node: u32, iteration: u32) -> Activation {
        Activation {
            node,
            iteration,
            attempt: 1,
            failure: None,
            failed: None,
            handler_retry: None,
        }
    }
}

struct Completion {
    slot: u64,
    act: Activation,
    attempt: u32,
    started_at_ms: i64,
    result: Result<NodeOutput>,
}

struct RunningInfo {
    slot: u64,
    node: u32,
    iteration: u32,
    attempt: u32,
    started_at_ms: i64,
}

#[derive(Clone, Copy)]
struct Work {
    edge: u32,
    taken: bool,
    /// Resolve even an exit edge of a cycle (the cycle is at rest, or a replay).
    force: bool,
}

enum End {
    Completed,
    Failed(ExecutionFailure),
    Cancelled(String),
}

/// A resume's replay in progress.
struct Replaying {
    runs: std::collections::VecDeque<RecordedRun>,
    /// Activations that became ready while replaying and whose recorded end has not come yet.
    parked: Vec<Activation>,
    record: bool,
    edits: Option<(usize, StateDelta)>,
    /// Runs replayed so far.
    replayed: usize,
}

/// A failure as the scheduler handles it.
struct Failure {
    class: String,
    message: String,
    /// A cancellation (not routed to error handlers when the execution itself is cancelled).
    cancelled: bool,
}

impl Failure {
    fn of(error: &Error) -> Failure {
        Failure {
            class: class_name(error),
            message: error.to_string(),
            cancelled: matches!(error, Error::Cancelled { .. }),
        }
    }
}

/// Events nodes emit go to the execution's log, and tokens and tool calls also to a parent's
/// sink (a sub-graph run by `map`/`subworkflow`).
struct Tee {
    log: Arc<EventLog>,
    parent: Arc<dyn EventSink>,
}

impl EventSink for Tee {
    fn emit(&self, kind: EventKind) {
        if matches!(
            kind,
            EventKind::Token { .. }
                | EventKind::ToolCallStarted { .. }
                | EventKind::ToolCallFinished { .. }
        ) {
            self.parent.emit(kind.clone());
        }
        self.log.push(kind);
    }

    fn keeps_events(&self) -> bool {
        self.log.keeps_events() || self.parent.keeps_events()
    }
}

pub(crate) struct Run {
    plan: Arc<Plan>,
    services: Arc<Services>,
    log: Arc<EventLog>,
    sink: Arc<dyn EventSink>,
    exec_id: Arc<str>,
    limits: Limits,
    /// The execution's token: what its host cancels.
    cancel: CancellationToken,
    /// The token the node runs' tokens are made from: cancelled once the execution is
    /// cancelled or ends (and, for a sub-graph, with its parent node's token).
    nodes: CancelToken,
    /// Shared with the contexts of the nodes that read it; a change copies it only while one of
    /// them still runs (`Arc::make_mut`).
    state: Arc<State>,
    owner: Option<String>,
    subgraphs: Arc<dyn SubgraphRunner>,
    started_at_ms: i64,
    /// The engine's observer (metrics), and whether this run is an execution of its own (not
    /// a sub-graph of one) whose start and end it reports.
    observer: Option<Arc<dyn EngineObserver>>,
    top_level: bool,

    edge_state: Vec<u8>,
    resolved: Vec<u32>,
    taken: Vec<u32>,
    fired: Vec<bool>,
    partial: Vec<bool>,
    overflow: HashMap<u32, VecDeque<(u32, bool)>>,
    iter: Vec<u32>,
    /// Per loop: activations queued or running, and nodes part-way through a join.
    loop_active: Vec<u32>,
    exit_taken: Vec<bool>,
    /// Per loop: whether a node of it ran since it was last at rest.
    loop_ran: Vec<bool>,
    touched: Vec<u32>,
    work: VecDeque<Work>,
    ready: VecDeque<Activation>,
    running: Vec<RunningInfo>,
    next_slot: u64,
    steps: u32,
    node_runs: Vec<NodeRun>,
    end: Option<End>,

    /// Durable executions: the step writer, and how far node runs and events were staged.
    writer: Option<StepWriter>,
    staged_runs: usize,
    staged_seq: u64,
    replay: Option<Replaying>,
    /// Inputs for waiting nodes run again on resume, by node id.
    resume_inputs: Vec<(String, Value)>,
    /// Node runs paused by an interrupt, and the earliest time one must be woken.
    waiting: u32,
    wake_at: Option<i64>,
    /// The clock's reading at the end of the last node run, for the next node run to start
    /// at when nothing was awaited in between (one clock read per step, not two). Cleared
    /// before anything that may wait.
    now_hint: Option<i64>,
    /// The caller keeps no events (`RunOptions::discard_events`, not durable): the log is
    /// muted and the hot path does not build them.
    quiet: bool,
    /// The caller wants the final state ([`Run::keep_state`]); otherwise the result takes the
    /// state's messages, variables and errors instead of copies.
    keep_state: bool,
}

impl Run {
    pub(crate) fn new(
        engine: Engine,
        plan: Arc<Plan>,
        input: Value,
        options: RunOptions,
        parent_sink: Option<Arc<dyn EventSink>>,
        parent_cancel: Option<&CancelToken>,
        replay: Option<Replay>,
    ) -> Run {
        let inner = engine.inner();
        let services = inner.services.clone();
        let observer = inner.observer.clone();
        let top_level = parent_sink.is_none();
        let exec_id: Arc<str> = Arc::from(
            options
                .execution_id
                .unwrap_or_else(|| ulid::Ulid::new().to_string()),
        );
        // Two events per node run plus the execution's own, so a run without loops never
        // regrows the log; a plan run before sizes it from its last run (loops, retries).
        let capacity = (plan.nodes.len() * 2 + 4).max(
            plan.last_sizes
                .events
                .load(Ordering::Relaxed)
                .min(SIZE_HINT_CAP),
        );
        let run_capacity = plan.nodes.len().max(
            plan.last_sizes
                .node_runs
                .load(Ordering::Relaxed)
                .min(SIZE_HINT_CAP),
        );
        let quiet = options.discard_events && options.durability.is_none();
        let log = Arc::new(EventLog::new(
            &exec_id,
            services.clock.clone(),
            if quiet { 0 } else { capacity },
        ));
        if quiet {
            log.set_muted(true);
        }
        let sink: Arc<dyn EventSink> = match parent_sink {
            Some(parent) => Arc::new(Tee {
                log: log.clone(),
                parent,
            }),
            None => log.clone(),
        };
        let cancel = options
            .cancel
            .map_or_else(CancellationToken::new, |t| t.child_token());
        let nodes = parent_cancel.map_or_else(CancelToken::new, CancelToken::child_token);
        let mut limits = options.limits.unwrap_or_else(|| inner.limits.clone());
        limits.max_concurrency = limits.max_concurrency.max(1);
        let mut state = State::new(input, options.history);
        if let Some(owner) = &options.owner {
            let mut metadata = Map::new();
            metadata.insert("owner_id".into(), Value::String(owner.clone()));
            state.apply(&StateDelta {
                metadata,
                ..StateDelta::default()
            });
        }
        let n = plan.nodes.len();
        let e = plan.edges.len();
        let loops = plan.loop_exits.len();
        let started_at_ms = services.clock.now_ms();
        let writer = options.durability.map(StepWriter::new);
        let mut resume_inputs = Vec::new();
        let replay = replay.map(|r| {
            resume_inputs = r.resume_inputs;
            if !r.record {
                log.prefill(r.events);
            }
            Replaying {
                runs: r.runs,
                parked: Vec::new(),
                record: r.record,
                edits: r.edits,
                replayed: 0,
            }
        });
        let staged_seq = log.len();
        Run {
            subgraphs: Arc::new(engine),
            plan,
            services,
            log,
            sink,
            exec_id,
            limits,
            cancel,
            nodes,
            state: Arc::new(state),
            owner: options.owner,
            started_at_ms,
            observer,
            top_level,
            edge_state: vec![PENDING; e],
            resolved: vec![0; n],
            taken: vec![0; n],
            fired: vec![false; n],
            partial: vec![false; n],
            overflow: HashMap::new(),
            iter: vec![0; n],
            loop_active: vec![0; loops],
            exit_taken: vec![false; e],
            loop_ran: vec![false; loops],
            touched: Vec::new(),
            work: VecDeque::new(),
            ready: VecDeque::new(),
            running: Vec::new(),
            next_slot: 0,
            steps: 0,
            node_runs: Vec::with_capacity(run_capacity),
            end: None,
            writer,
            staged_runs: 0,
            staged_seq,
            replay,
            resume_inputs,
            waiting: 0,
            wake_at: None,
            now_hint: None,
            quiet,
            keep_state: false,
        }
    }

    /// Makes [`Run::execute`] return the final state too (a sub-graph's caller reads it).
    pub(crate) fn keep_state(mut self) -> Run {
        self.keep_state = true;
        self
    }

    pub(crate) fn execution_id(&self) -> &str {
        &self.exec_id
    }

    pub(crate) fn log(&self) -> Arc<EventLog> {
        self.log.clone()
    }

    pub(crate) fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    fn apply_delta(&mut self, delta: &StateDelta) {
        if !delta.is_empty() {
            // The node that made the delta has ended, and its context with it: the state is
            // changed in place, not copied (nor is its message list, which a copy would share).
            Arc::make_mut(&mut self.state).apply(delta);
        }
    }

    /// The state a node starts with: the run's own, shared.
    fn snapshot(&self) -> Arc<State> {
        Arc::clone(&self.state)
    }

    fn now(&self) -> i64 {
        self.services.clock.now_ms()
    }

    /// Whether the execution is cancelled: by its host, or (a sub-graph's) with its parent
    /// node. The node runs' token is read first: it takes no lock.
    fn cancelled(&self) -> bool {
        self.nodes.is_cancelled() || self.cancel.is_cancelled()
    }

    /// When a node run starts now: the end of the last one when nothing was awaited since.
    fn start_time(&mut self) -> i64 {
        self.now_hint.take().unwrap_or_else(|| self.now())
    }

    /// Runs the execution to its end; returns the result, and the final state when it is kept
    /// ([`Run::keep_state`]).
    pub(crate) async fn execute(mut self) -> (ExecutionResult, Option<State>) {
        let resuming = self.replay.as_ref().is_some_and(|r| !r.record);
        // A resumed execution whose first step was never stored has not announced its start.
        if !resuming || self.log.len() == 0 {
            self.log.push(EventKind::ExecutionStarted {
                input: self.state.input().clone(),
            });
            if self.top_level
                && let Some(observer) = &self.observer
            {
                observer.execution_started();
            }
        }
        if resuming {
            self.log.set_muted(true);
        }
        let plan = self.plan.clone();
        let plan = &*plan;
        for &entry in &plan.entries {
            self.activate_fresh(plan, entry);
        }
        // A node no entry leads to (the validator warns of it) is dead from the start, so the
        // joins it feeds do not wait for it.
        for (i, n) in plan.nodes.iter().enumerate() {
            if n.fwd_in.is_empty() && !plan.entries.contains(&(i as u32)) {
                self.skip(plan, i as u32);
            }
        }
        self.drain(plan);
        if self.replay.is_some() {
            self.replay_recorded(plan).await;
        }
        let mut running: FuturesUnordered<BoxFuture<'_, Completion>> = FuturesUnordered::new();
        let cancel = self.cancel.clone();
        let cancelled = cancel.cancelled();
        tokio::pin!(cancelled);
        // A sub-graph's nodes are cancelled with its parent node: its token is not the host's.
        // (A top-level run's node token is cancelled only by the run itself, at its end: it
        // is not waited on.)
        let nodes = self.nodes.clone();
        let nodes_cancelled = nodes.cancelled();
        tokio::pin!(nodes_cancelled);
        let sub_graph = !self.top_level;
        let deadline = tokio::time::sleep(Duration::from_millis(self.limits.execution_timeout_ms));
        tokio::pin!(deadline);
        let mut inline_runs = 0u32;
        loop {
            while self.end.is_none() && running.len() < self.limits.max_concurrency {
                if self.cancelled() {
                    self.end = Some(End::Cancelled("cancelled by request".into()));
                    break;
                }
                let Some(act) = self.ready.pop_front() else {
                    break;
                };
                inline_runs += 1;
                if inline_runs.is_multiple_of(256) {
                    // A long run of nodes that never wait must not hold the thread.
                    self.now_hint = None;
                    tokio::task::yield_now().await;
                }
                // `sync`: the steps staged are written before a node that is not pure starts
                // (it is started, not yet polled), with its intent when it acts on the outside
                // world (one write, not two).
                let fuse = self.sync_steps_staged() && !plan.nodes[act.node as usize].node.pure();
                if let Some(mut launch) = self.start(plan, act, fuse) {
                    if fuse {
                        self.now_hint = None;
                        match launch.intent.take() {
                            Some(intent) => self.write_intent(&intent).await,
                            None => self.write_staged().await,
                        }
                        if self.end.is_some() {
                            // Not started: `finish` records it as cancelled.
                            break;
                        }
                    }
                    // Most nodes finish without waiting: poll once here (no timer, no task), and
                    // only runs that wait or retry join the concurrent set.
                    match futures::poll!(&mut launch.fut) {
                        std::task::Poll::Ready(outcome) => {
                            match outcome_result(outcome, &launch.node.spec) {
                                Ok(output) => {
                                    let attempt = launch.act.attempt;
                                    let done = launch.completion(attempt, Ok(output));
                                    self.complete(plan, done);
                                    let last = self.ends_here(running.is_empty());
                                    self.commit_point(last).await;
                                }
                                Err(error) if launch.may_retry(&error, launch.act.attempt) => {
                                    let log = self.log.clone();
                                    let nodes = self.nodes.clone();
                                    running.push(Box::pin(drive(launch, Some(error), log, nodes)));
                                }
                                Err(error) => {
                                    let attempt = launch.act.attempt;
                                    let done = launch.completion(attempt, Err(error));
                                    self.complete(plan, done);
                                    let last = self.ends_here(running.is_empty());
                                    self.commit_point(last).await;
                                }
                            }
                        }
                        std::task::Poll::Pending => {
                            let log = self.log.clone();
                            let nodes = self.nodes.clone();
                            running.push(Box::pin(drive(launch, None, log, nodes)));
                        }
                    }
                }
            }
            if self.end.is_some() || running.is_empty() {
                break;
            }
            // `sync`: nothing is left staged while the execution waits.
            self.now_hint = None;
            self.write_staged().await;
            if self.end.is_some() {
                break;
            }
            tokio::select! {
                biased;
                () = &mut cancelled => {
                    self.end = Some(End::Cancelled("cancelled by request".into()));
                }
                () = &mut nodes_cancelled, if sub_graph => {
                    self.end = Some(End::Cancelled("cancelled by request".into()));
                }
                () = &mut deadline => {
                    let error = Error::Timeout {
                        what: "execution".into(),
                        after_ms: self.limits.execution_timeout_ms,
                    };
                    self.end = Some(End::Failed(ExecutionFailure {
                        class: "timeout".into(),
                        message: error.to_string(),
                        node_id: None,
                    }));
                }
                Some(done) = running.next() => {
                    self.complete(plan, done);
                    // Completions that are ready too share the step's transaction.
                    while let Some(Some(done)) = running.next().now_or_never() {
                        self.complete(plan, done);
                    }
                    let last = self.ends_here(running.is_empty());
                    self.commit_point(last).await;
                }
            }
        }
        // Whatever still runs is stopped: its context's token first, then its future dropped.
        self.cancel.cancel();
        self.nodes.cancel();
        drop(running);
        self.finish().await
    }

    /// Replays the recorded ends of a resumed (or forked) execution: each is applied when the
    /// scheduler, following the same rules as the original run, makes its node ready. What is
    /// ready once all are applied runs live.
    async fn replay_recorded(&mut self, plan: &Plan) {
        loop {
            let Some(replay) = self.replay.as_mut() else {
                return;
            };
            if replay
                .edits
                .as_ref()
                .is_some_and(|(after, _)| *after <= replay.replayed)
                && let Some((_, edits)) = replay.edits.take()
            {
                self.apply_delta(&edits);
                continue;
            }
            let Some(front) = replay.runs.front() else {
                break;
            };
            let found = replay.parked.iter().position(|a| {
                plan.nodes[a.node as usize].spec.id.as_str() == front.node_id
                    && a.iteration == front.iteration
                    && a.attempt <= front.attempt
            });
            let act = match found {
                Some(pos) => replay.parked.remove(pos),
                None => {
                    if self.end.is_some() {
                        break;
                    }
                    match self.ready.pop_front() {
                        Some(act) => {
                            replay.parked.push(act);
                            continue;
                        }
                        None => {
                            let message = format!(
                                "cannot resume: the recorded run of node `{}` (iteration {}) \
                                 does not follow from the workflow (was it changed?)",
                                front.node_id, front.iteration
                            );
                            self.fail_with(&Error::Internal { message }, None);
                            break;
                        }
                    }
                }
            };
            let Some(run) = replay.runs.pop_front() else {
                break;
            };
            let record = replay.record;
            replay.replayed += 1;
            self.steps += 1;
            let result = match run.outcome {
                RecordedOutcome::Completed {
                    delta,
                    route,
                    output,
                } => Ok(NodeOutput {
                    delta: *delta,
                    route,
                    output: output.into(),
                }),
                RecordedOutcome::Failed { class, message } => Err(Failure {
                    cancelled: class == "cancelled",
                    class,
                    message,
                }),
            };
            if record {
                let n = &plan.nodes[act.node as usize];
                self.log.push_at(
                    run.started_at_ms,
                    EventKind::NodeStarted {
                        node_id: n.spec.id.0.clone(),
                        kind: n.spec.kind.0.clone(),
                        iteration: act.iteration,
                        attempt: run.attempt,
                    },
                );
            }
            self.complete_recorded(plan, act, run.attempt, run.started_at_ms, result);
            if record {
                self.commit_point(false).await;
            }
        }
        let Some(replay) = self.replay.take() else {
            return;
        };
        // Runs that had started and not ended go first, with their original attempt numbers
        // (and so their idempotency keys).
        for act in replay.parked.into_iter().rev() {
            self.ready.push_front(act);
        }
        if let Some((_, edits)) = replay.edits {
            self.apply_delta(&edits);
        }
        if !replay.record {
            // The replayed runs are stored already; their events were muted. (Events pushed
            // before the replay, an `execution_started` never stored, are still to be staged.)
            self.log.set_muted(self.quiet);
            self.staged_runs = self.node_runs.len();
        }
    }

    /// Whether the execution ends once the completions just applied are committed: it has
    /// ended, or nothing is ready and (`idle`) nothing runs.
    fn ends_here(&self, idle: bool) -> bool {
        self.end.is_some() || (idle && self.ready.is_empty())
    }

    /// A durable execution's commit point: stages the node runs ended since the last one as
    /// steps, and in `sync` mode writes them before anything else starts. At the `last` one
    /// nothing else starts: the steps stay staged and are written with the execution's end,
    /// in the same transaction ([`Run::record_end`]).
    ///
    /// In `sync` mode the staged steps are written later, but before anything that is not pure
    /// happens: before a node that is not [pure](crate::engine::Node::pure) starts (with its
    /// intent, when it acts on the outside world), before the execution waits for a running
    /// node, or with the execution's end. A pure node's step so rides with the next write.
    async fn commit_point(&mut self, last: bool) {
        self.stage_steps();
        if last || self.sync_steps_staged() {
            return;
        }
        if let Some(writer) = self.writer.as_mut() {
            self.now_hint = None;
            writer.flush(false).await;
        }
        self.check_writer();
    }

    /// Whether `sync` steps are staged (or the execution's row is not written yet), to be
    /// written before anything that is not pure.
    fn sync_steps_staged(&self) -> bool {
        self.writer.as_ref().is_some_and(|w| {
            w.mode == super::DurabilityMode::Sync && (!w.staged.is_empty() || w.start.is_some())
        })
    }

    /// Writes the staged steps now (`sync`; in the other modes the commit point handed them
    /// over already).
    async fn write_staged(&mut self) {
        if !self.sync_steps_staged() {
            return;
        }
        if let Some(writer) = self.writer.as_mut() {
            self.now_hint = None;
            writer.flush(false).await;
        }
        self.check_writer();
    }

    /// Writes the staged steps and `intent` in one transaction, before its node starts.
    async fn write_intent(&mut self, intent: &crate::store::NodeRunRecord) {
        if let Some(writer) = self.writer.as_mut() {
            writer.write_with_intent(intent).await;
        }
        self.check_writer();
    }

    /// A failed write ends the execution as failed (it stays resumable in the store).
    fn check_writer(&mut self) {
        if let Some(writer) = &self.writer
            && let Some(error) = &writer.failed
            && self.end.is_none()
        {
            let message = format!("the execution could not be recorded: {error}");
            self.end = Some(End::Failed(ExecutionFailure {
                class: "storage".into(),
                message,
                node_id: None,
            }));
        }
    }

    /// The events not yet staged, as stored; they count as staged from now on.
    fn take_unstaged_events(&mut self) -> Vec<crate::store::NewEvent> {
        let events = self.log.map_after(self.staged_seq, new_event);
        self.staged_seq += events.len() as u64;
        events
    }

    /// Turns the node runs ended since the last call into step commits (with the events since
    /// the last step on the first of them, and a snapshot when one is due).
    fn stage_steps(&mut self) {
        if self.writer.is_none()
            || self.replay.as_ref().is_some_and(|r| !r.record)
            || self.staged_runs >= self.node_runs.len()
        {
            return;
        }
        let mut events = Some(self.take_unstaged_events());
        let Some(writer) = self.writer.as_mut() else {
            return;
        };
        let mut snapshot_due = false;
        let first = writer.staged.len();
        for run in &self.node_runs[self.staged_runs..] {
            snapshot_due |= writer.snapshot_due();
            let record = node_run_record(&self.exec_id, run);
            let state_delta = super::durable::delta_value(&run.delta);
            writer.staged.push(crate::store::StepCommit {
                node_run: record,
                state_delta,
                events: events.take().unwrap_or_default(),
                snapshot: None,
            });
        }
        if snapshot_due
            && writer.staged.len() > first
            && super::durable::snapshot_worth_writing(&self.state)
            && let Some(last) = writer.staged.last_mut()
        {
            last.snapshot = serde_json::to_value(&self.state).ok();
        }
        self.staged_runs = self.node_runs.len();
    }

    /// Starts an activation: the step count, the `node_started` event, the node future.
    ///
    /// With `fuse` (`sync` mode, steps staged), the intent of a node that acts on the outside
    /// world is not written inside its future but handed back in [`Launch::intent`], for the
    /// caller to write with the staged steps ([`Run::write_intent`]) before polling it.
    fn start<'p>(&mut self, plan: &'p Plan, act: Activation, fuse: bool) -> Option<Launch<'p>> {
        let n = &plan.nodes[act.node as usize];
        if self.steps >= self.limits.max_steps {
            let error = Error::LimitExceeded {
                limit: "max_steps".into(),
                message: format!(
                    "{} node runs reached before node `{}`",
                    self.limits.max_steps, n.spec.id
                ),
            };
            self.fail_with(&error, Some(&n.spec.id.0));
            return None;
        }
        if let Some(max) = n.max_iterations
            && act.iteration > max
        {
            let error = Error::LimitExceeded {
                limit: "max_iterations".into(),
                message: format!(
                    "loop node `{}` entered for pass {} of at most {max}",
                    n.spec.id, act.iteration
                ),
            };
            self.fail_with(&error, Some(&n.spec.id.0));
            return None;
        }
        self.steps += 1;
        let started_at_ms = self.start_time();
        if !self.quiet {
            self.log.push_at(
                started_at_ms,
                EventKind::NodeStarted {
                    node_id: n.spec.id.0.clone(),
                    kind: n.spec.kind.0.clone(),
                    iteration: act.iteration,
                    attempt: act.attempt,
                },
            );
        }
        let usage = *self.state.usage();
        let ctx = NodeContext {
            execution_id: self.exec_id.clone(),
            spec: n.spec.clone(),
            iteration: act.iteration,
            attempt: act.attempt,
            state: self.snapshot(),
            services: self.services.clone(),
            events: self.sink.clone(),
            cancel: self.nodes.child_token(),
            failure: act.failure.clone(),
            subgraphs: Some(self.subgraphs.clone()),
            tokens_left: self
                .limits
                .max_tokens
                .map(|m| m.saturating_sub(usage.total_tokens)),
            cost_left: self.limits.max_cost.map(|m| (m - usage.cost).max(0.0)),
            resume_input: self
                .resume_inputs
                .iter()
                .position(|(id, _)| id == n.spec.id.as_str())
                .map(|i| Arc::new(self.resume_inputs.swap_remove(i).1)),
        };
        let slot = self.next_slot;
        self.next_slot += 1;
        self.running.push(RunningInfo {
            slot,
            node: act.node,
            iteration: act.iteration,
            attempt: act.attempt,
            started_at_ms,
        });
        let timeout_ms = n.policy.timeout_ms.unwrap_or(self.limits.node_timeout_ms);
        // Kept only while another attempt is possible.
        let retry_ctx = (n.policy.retry.max_attempts > 1).then(|| ctx.clone());
        let cancel = ctx.cancel.clone();
        let intent = self.writer.as_ref().and_then(|w| {
            (w.mode == super::DurabilityMode::Sync && w.failed.is_none() && n.node.side_effects())
                .then(|| {
                    let mut run = crate::store::NodeRunRecord::started(
                        &*self.exec_id,
                        n.spec.id.as_str(),
                        i64::from(act.iteration),
                        i64::from(act.attempt),
                        started_at_ms,
                    );
                    run.idempotency_key = Some(ctx.idempotency_key());
                    (w.store.clone(), run)
                })
        });
        let span = node_span(&self.exec_id, &n.spec, act.iteration, act.attempt);
        let (intent, fused) = match intent {
            Some((_, run)) if fuse => (None, Some(Box::new(run))),
            other => (other, None),
        };
        let fut: BoxFuture<'p, Result<NodeOutput>> = match intent {
            None => n.node.run(ctx),
            Some((store, run)) => {
                let node = n.node.clone();
                Box::pin(async move {
                    crate::failpoint::hit("engine.before_intent");
                    store.record_intent(&run).await?;
                    crate::failpoint::hit("engine.after_intent");
                    node.run(ctx).await
                })
            }
        };
        // No subscriber (or none interested): no span, and no second box.
        let fut = if span.is_disabled() {
            fut
        } else {
            Box::pin(fut.instrument(span))
        };
        let fut = AssertUnwindSafe(fut).catch_unwind();
        Some(Launch {
            node: n,
            fut,
            retry_ctx,
            cancel,
            timeout_ms,
            act,
            slot,
            started_at_ms,
            intent: fused,
        })
    }

    fn complete(&mut self, plan: &Plan, done: Completion) {
        if let Some(pos) = self.running.iter().position(|r| r.slot == done.slot) {
            self.running.swap_remove(pos);
        }
        if let Some(observer) = &self.observer {
            let status = match &done.result {
                Ok(output) if output.route == Route::Wait => NodeRunStatus::Waiting,
                Ok(_) => NodeRunStatus::Completed,
                Err(Error::Cancelled { .. }) => NodeRunStatus::Cancelled,
                Err(_) => NodeRunStatus::Failed,
            };
            let duration_ms = u64::try_from(self.now() - done.started_at_ms).unwrap_or(0);
            let kind = &plan.nodes[done.act.node as usize].spec.kind.0;
            observer.node_ended(kind, status, duration_ms);
        }
        let result = done.result.map_err(|error| Failure::of(&error));
        self.complete_recorded(plan, done.act, done.attempt, done.started_at_ms, result);
    }

    /// Applies the end of a node run: live, or recorded and replayed.
    fn complete_recorded(
        &mut self,
        plan: &Plan,
        act: Activation,
        attempt: u32,
        started_at_ms: i64,
        result: std::result::Result<NodeOutput, Failure>,
    ) {
        let node = act.node;
        let n = &plan.nodes[node as usize];
        let now = self.now();
        self.now_hint = Some(now);
        let duration_ms = u64::try_from(now - started_at_ms).unwrap_or(0);
        match result {
            Ok(output) if output.route == Route::Wait => {
                // Paused: the run waits, its edges stay open, its loops stay active.
                if let Some(wake_at) = output.output.get("wake_at").and_then(Value::as_i64) {
                    self.wake_at = Some(self.wake_at.map_or(wake_at, |w| w.min(wake_at)));
                }
                self.waiting += 1;
                self.node_runs.push(NodeRun {
                    node_id: n.spec.id.0.clone(),
                    kind: n.spec.kind.0.clone(),
                    iteration: act.iteration,
                    attempt,
                    status: NodeRunStatus::Waiting,
                    started_at_ms,
                    duration_ms,
                    error: None,
                    output: output.output,
                    delta: StateDelta::default(),
                    error_class: None,
                    route: Route::Wait,
                });
                self.drain(plan);
                return;
            }
            Ok(output) => {
                self.apply_delta(&output.delta);
                if !self.quiet {
                    self.log.push_at(
                        now,
                        EventKind::NodeCompleted {
                            node_id: n.spec.id.0.clone(),
                            iteration: act.iteration,
                            duration_ms,
                            output: output.output.value().clone(),
                        },
                    );
                }
                self.node_runs.push(NodeRun {
                    node_id: n.spec.id.0.clone(),
                    kind: n.spec.kind.0.clone(),
                    iteration: act.iteration,
                    attempt,
                    status: NodeRunStatus::Completed,
                    started_at_ms,
                    duration_ms,
                    error: None,
                    output: output.output,
                    delta: output.delta,
                    error_class: None,
                    route: output.route.clone(),
                });
                if !self.check_budget(&n.spec.id.0) {
                    self.after_completion(plan, node);
                    return;
                }
                if let Some((handler, _)) = act.handler_retry {
                    // The retried node succeeded: the handler's own edges are not taken.
                    self.push_all_dead(plan, handler);
                }
                match output.route {
                    Route::Stop { error: None } => {
                        self.end = Some(End::Completed);
                    }
                    Route::Stop {
                        error: Some(message),
                    } => {
                        self.end = Some(End::Failed(ExecutionFailure {
                            class: "stopped".into(),
                            message,
                            node_id: Some(n.spec.id.0.clone()),
                        }));
                    }
                    Route::RetryFailed if act.failed.is_some() => {
                        if let (Some((failed, iteration, attempt)), Some(failure)) =
                            (act.failed, act.failure.as_ref())
                        {
                            self.enqueue(
                                plan,
                                Activation {
                                    attempt: attempt + 1,
                                    handler_retry: Some((node, failure.retries + 1)),
                                    ..Activation::new(failed, iteration)
                                },
                            );
                        }
                    }
                    route => {
                        if let Some((failed, _, _)) = act.failed {
                            // The handler took over: the failed node's edges are dead.
                            self.push_normal_dead(plan, failed);
                        }
                        // A node re-run by its handler resolved its error routes when it first
                        // failed; only its normal edges are still open.
                        let normal_only = act.handler_retry.is_some();
                        if let Err(error) =
                            self.route(plan, node, act.iteration, &route, normal_only)
                        {
                            self.fail_with(&error, Some(&n.spec.id.0));
                        }
                    }
                }
            }
            Err(failure) => {
                self.fail_node(plan, act, attempt, started_at_ms, failure);
            }
        }
        self.after_completion(plan, node);
    }

    fn after_completion(&mut self, plan: &Plan, node: u32) {
        for &l in &plan.nodes[node as usize].loops {
            self.loop_active[l as usize] = self.loop_active[l as usize].saturating_sub(1);
            self.touched.push(l);
        }
        self.drain(plan);
    }

    /// A node run failed (after its own retries): apply its `on_error`/error-route policy.
    fn fail_node(
        &mut self,
        plan: &Plan,
        act: Activation,
        attempt: u32,
        started_at_ms: i64,
        failure: Failure,
    ) {
        let n = &plan.nodes[act.node as usize];
        let node_id = n.spec.id.0.clone();
        let Failure {
            class,
            message,
            cancelled,
        } = failure;
        let duration_ms = u64::try_from(self.now() - started_at_ms).unwrap_or(0);
        let delta = StateDelta {
            errors: vec![ErrorRecord {
                node_id: node_id.clone(),
                message: message.clone(),
                kind: class.clone(),
            }],
            ..StateDelta::default()
        };
        self.apply_delta(&delta);
        self.log.push(EventKind::NodeFailed {
            node_id: node_id.clone(),
            iteration: act.iteration,
            error: message.clone(),
            class: class.clone(),
        });
        self.node_runs.push(NodeRun {
            node_id: node_id.clone(),
            kind: n.spec.kind.0.clone(),
            iteration: act.iteration,
            attempt,
            status: NodeRunStatus::Failed,
            started_at_ms,
            duration_ms,
            error: Some(message.clone()),
            output: Value::Null.into(),
            delta,
            error_class: Some(class.clone()),
            route: Route::Edges,
        });
        if cancelled && self.cancelled() {
            return;
        }
        let failure = |retries| {
            Arc::new(NodeFailure {
                node_id: node_id.clone(),
                message: message.clone(),
                class: class.clone(),
                retries,
            })
        };
        if let Some((handler, retries)) = act.handler_retry {
            // Failed again after the handler's retry: back to the handler.
            let iteration = self.next_iteration(handler);
            self.enqueue(
                plan,
                Activation {
                    failure: Some(failure(retries)),
                    failed: Some((act.node, act.iteration, attempt)),
                    ..Activation::new(handler, iteration)
                },
            );
            return;
        }
        if let Some((failed, _, _)) = act.failed
            && (n.has_error_branch || n.has_handler || n.policy.on_error_continue)
        {
            // A handler that fails but whose failure is handled: the original node's edges end.
            self.push_normal_dead(plan, failed);
        }
        if n.has_error_branch {
            for &e in &n.out {
                let taken = plan.edges[e as usize].role == EdgeRole::ErrorBranch;
                self.push(e, taken);
            }
        } else if n.has_handler {
            let mut chosen = None;
            for &e in &n.out {
                let edge = &plan.edges[e as usize];
                if edge.role == EdgeRole::Handler {
                    let take = chosen.is_none();
                    if take {
                        chosen = Some(edge.target);
                    }
                    self.push(e, take);
                }
            }
            if let Some(handler) = chosen {
                let iteration = self.next_iteration(handler);
                self.enqueue(
                    plan,
                    Activation {
                        failure: Some(failure(0)),
                        failed: Some((act.node, act.iteration, attempt)),
                        ..Activation::new(handler, iteration)
                    },
                );
            }
        } else if n.policy.on_error_continue {
            if let Err(e) = self.route(plan, act.node, act.iteration, &Route::Edges, false) {
                self.fail_with(&e, Some(&node_id));
            }
        } else {
            self.end = Some(End::Failed(ExecutionFailure {
                class,
                message,
                node_id: Some(node_id),
            }));
        }
    }

    /// Routes a node's normal out-edges (DESIGN §5): the branch first, then the first true
    /// condition in document order, else the unconditional edges; everything else is dead.
    fn route(
        &mut self,
        plan: &Plan,
        node: u32,
        iteration: u32,
        route: &Route,
        normal_only: bool,
    ) -> Result<()> {
        let n = &plan.nodes[node as usize];
        let branch = match route {
            Route::Branch(name) if n.branches_by_handle => Some(name.as_str()),
            _ => None,
        };
        let eligible = |e: u32| {
            let edge = &plan.edges[e as usize];
            edge.role == EdgeRole::Normal
                && branch.is_none_or(|b| edge.handle.as_deref() == Some(b))
        };
        let mut chosen = None;
        let mut context = None;
        for &e in &n.out {
            if !eligible(e) {
                continue;
            }
            if let Some(condition) = &plan.edges[e as usize].condition {
                let state = &self.state;
                let holds = condition.eval_on(state, || {
                    // Only the state variables the node's conditions read are built, once.
                    context.get_or_insert_with(|| {
                        state.to_context_keys(
                            &plan.condition_reads[node as usize],
                            Some((n.spec.id.as_str(), n.spec.kind.as_str(), iteration)),
                        )
                    })
                })?;
                if holds {
                    chosen = Some(e);
                    break;
                }
            }
        }
        for &e in &n.out {
            if normal_only && plan.edges[e as usize].role != EdgeRole::Normal {
                continue;
            }
            let taken = eligible(e)
                && match chosen {
                    Some(c) => c == e,
                    None => plan.edges[e as usize].condition.is_none(),
                };
            self.push(e, taken);
        }
        Ok(())
    }

    fn push(&mut self, edge: u32, taken: bool) {
        self.work.push_back(Work {
            edge,
            taken,
            force: false,
        });
    }

    fn push_all_dead(&mut self, plan: &Plan, node: u32) {
        for &e in &plan.nodes[node as usize].out {
            self.push(e, false);
        }
    }

    fn push_normal_dead(&mut self, plan: &Plan, node: u32) {
        for &e in &plan.nodes[node as usize].out {
            if plan.edges[e as usize].role == EdgeRole::Normal {
                self.push(e, false);
            }
        }
    }

    /// Resolves queued edges, propagating deadness, and closes the exits of loops at rest:
    /// innermost loops first, one at a time, each loop's consequences settled before the next
    /// (an inner loop's exit may still end the pass of the loop around it).
    fn drain(&mut self, plan: &Plan) {
        // Each round settles one loop. Far more rounds than loops would mean a bug in the
        // bookkeeping: fail the execution rather than spin.
        let mut rounds_left = (plan.loop_exits.len() + 1) * 8;
        loop {
            while let Some(w) = self.work.pop_front() {
                self.resolve(plan, w);
            }
            if self.touched.is_empty() {
                return;
            }
            if rounds_left == 0 {
                self.work.clear();
                self.touched.clear();
                let error = Error::Internal {
                    message: "the scheduler could not settle the loops' exits".into(),
                };
                self.fail_with(&error, None);
                return;
            }
            rounds_left -= 1;
            // Largest first, so `pop` yields the innermost loop.
            self.touched
                .sort_unstable_by_key(|&l| (std::cmp::Reverse(plan.loop_sizes[l as usize]), l));
            self.touched.dedup();
            let mut settled = None;
            while let Some(l) = self.touched.pop() {
                if self.loop_active[l as usize] == 0 {
                    settled = Some(l);
                    break;
                }
                // Still busy: it is touched again when its activity ends.
            }
            let Some(l) = settled else {
                return;
            };
            self.loop_ran[l as usize] = false;
            for &e in &plan.loop_exits[l as usize] {
                if !std::mem::replace(&mut self.exit_taken[e as usize], false) {
                    self.work.push_back(Work {
                        edge: e,
                        taken: false,
                        force: true,
                    });
                }
            }
        }
    }

    fn resolve(&mut self, plan: &Plan, w: Work) {
        let edge = &plan.edges[w.edge as usize];
        if edge.back {
            if w.taken {
                let target = edge.target;
                let iteration = self.next_iteration(target);
                self.enqueue(plan, Activation::new(target, iteration));
            }
            return;
        }
        if edge.exit_of.is_some() && !w.force {
            if w.taken {
                self.exit_taken[w.edge as usize] = true;
            } else {
                // A later pass of the cycle may still take it: decided when the cycle rests.
                return;
            }
        }
        let t = edge.target;
        let ti = t as usize;
        if self.edge_state[w.edge as usize] != PENDING {
            // The next wave arrived before this one completed at the target.
            self.overflow
                .entry(t)
                .or_default()
                .push_back((w.edge, w.taken));
            return;
        }
        self.edge_state[w.edge as usize] = if w.taken { TAKEN } else { DEAD };
        let n = &plan.nodes[ti];
        self.resolved[ti] += 1;
        if w.taken {
            self.taken[ti] += 1;
        }
        let complete = self.resolved[ti] as usize >= n.fwd_in.len();
        if !complete && !self.partial[ti] {
            self.partial[ti] = true;
            for &l in &n.loops {
                self.loop_active[l as usize] += 1;
            }
        }
        match n.join {
            Join::All => {
                if complete {
                    if self.taken[ti] > 0 {
                        self.activate_fresh(plan, t);
                    } else {
                        self.skip(plan, t);
                    }
                }
            }
            Join::Any => {
                if w.taken && !self.fired[ti] {
                    self.fired[ti] = true;
                    self.activate_fresh(plan, t);
                }
                if complete && !self.fired[ti] {
                    self.skip(plan, t);
                }
            }
            Join::Handler => {
                if complete && self.taken[ti] == 0 {
                    self.skip(plan, t);
                }
            }
        }
        if complete {
            self.reset_wave(plan, t);
        }
    }

    fn reset_wave(&mut self, plan: &Plan, t: u32) {
        let ti = t as usize;
        let n = &plan.nodes[ti];
        for &e in &n.fwd_in {
            self.edge_state[e as usize] = PENDING;
        }
        self.resolved[ti] = 0;
        self.taken[ti] = 0;
        self.fired[ti] = false;
        if std::mem::replace(&mut self.partial[ti], false) {
            for &l in &n.loops {
                self.loop_active[l as usize] = self.loop_active[l as usize].saturating_sub(1);
                self.touched.push(l);
            }
        }
        if let Some(queue) = self.overflow.remove(&t) {
            for (edge, taken) in queue {
                self.work.push_back(Work {
                    edge,
                    taken,
                    force: true,
                });
            }
        }
    }

    /// A node on a dead path. Inside a cycle that has run, the not-taken branch of a pass is
    /// routine (every loop exit has one), so it propagates silently; elsewhere the skip is
    /// recorded as a node run and a `node_skipped` event.
    fn skip(&mut self, plan: &Plan, t: u32) {
        let n = &plan.nodes[t as usize];
        let record = n.loops.iter().all(|&l| !self.loop_ran[l as usize]);
        if record {
            self.log.push(EventKind::NodeSkipped {
                node_id: n.spec.id.0.clone(),
            });
            let now = self.now();
            self.node_runs.push(NodeRun {
                node_id: n.spec.id.0.clone(),
                kind: n.spec.kind.0.clone(),
                iteration: self.iter[t as usize],
                attempt: 0,
                status: NodeRunStatus::Skipped,
                started_at_ms: now,
                duration_ms: 0,
                error: None,
                output: Value::Null.into(),
                delta: StateDelta::default(),
                error_class: None,
                route: Route::Edges,
            });
        }
        self.touched.extend_from_slice(&n.loops);
        for &e in &n.out {
            self.push(e, false);
        }
    }

    fn next_iteration(&mut self, node: u32) -> u32 {
        let i = self.iter[node as usize];
        self.iter[node as usize] = i.saturating_add(1);
        i
    }

    /// Activates a node entered through its forward in-edges (or as an entry): a loop entered
    /// this way starts counting its iterations from zero again.
    fn activate_fresh(&mut self, plan: &Plan, t: u32) {
        let n = &plan.nodes[t as usize];
        if !n.loop_body.is_empty() {
            for &m in &n.loop_body {
                self.iter[m as usize] = 0;
            }
            let stale: Vec<(String, Option<crate::state::LoopState>)> = n
                .loop_nodes_in_body
                .iter()
                .filter(|id| self.state.loop_state(id).is_some())
                .map(|id| (id.clone(), None))
                .collect();
            if !stale.is_empty() {
                self.apply_delta(&StateDelta {
                    loops: stale,
                    ..StateDelta::default()
                });
            }
        }
        let iteration = self.next_iteration(t);
        self.enqueue(plan, Activation::new(t, iteration));
    }

    fn enqueue(&mut self, plan: &Plan, act: Activation) {
        for &l in &plan.nodes[act.node as usize].loops {
            self.loop_active[l as usize] += 1;
            self.loop_ran[l as usize] = true;
        }
        self.ready.push_back(act);
    }

    /// Checks the token and cost budgets; on excess ends the execution and returns false.
    fn check_budget(&mut self, node_id: &str) -> bool {
        let usage = *self.state.usage();
        let over = match (self.limits.max_tokens, self.limits.max_cost) {
            (Some(max), _) if usage.total_tokens > max => Some(Error::LimitExceeded {
                limit: "max_tokens".into(),
                message: format!("{} tokens used, budget {max}", usage.total_tokens),
            }),
            (_, Some(max)) if usage.cost > max => Some(Error::LimitExceeded {
                limit: "max_cost".into(),
                message: format!("cost {:.6} USD, budget {max} USD", usage.cost),
            }),
            _ => None,
        };
        match over {
            Some(error) => {
                self.fail_with(&error, Some(node_id));
                false
            }
            None => true,
        }
    }

    fn fail_with(&mut self, error: &Error, node_id: Option<&str>) {
        if self.end.is_some() {
            return;
        }
        self.end = Some(End::Failed(ExecutionFailure {
            class: class_name(error),
            message: error.to_string(),
            node_id: node_id.map(str::to_owned),
        }));
    }

    async fn finish(mut self) -> (ExecutionResult, Option<State>) {
        let paused = self.end.is_none() && self.waiting > 0;
        let end = self.end.take().unwrap_or(End::Completed);
        let now = self.now();
        let plan = self.plan.clone();
        for info in std::mem::take(&mut self.running) {
            let n = &plan.nodes[info.node as usize];
            let message = match &end {
                End::Cancelled(reason) => format!("cancelled: {reason}"),
                _ => "cancelled: the execution ended".to_owned(),
            };
            self.log.push(EventKind::NodeFailed {
                node_id: n.spec.id.0.clone(),
                iteration: info.iteration,
                error: message.clone(),
                class: "cancelled".into(),
            });
            let duration_ms = u64::try_from(now - info.started_at_ms).unwrap_or(0);
            if let Some(observer) = &self.observer {
                observer.node_ended(&n.spec.kind.0, NodeRunStatus::Cancelled, duration_ms);
            }
            self.node_runs.push(NodeRun {
                node_id: n.spec.id.0.clone(),
                kind: n.spec.kind.0.clone(),
                iteration: info.iteration,
                attempt: info.attempt,
                status: NodeRunStatus::Cancelled,
                started_at_ms: info.started_at_ms,
                duration_ms,
                error: Some(message),
                output: Value::Null.into(),
                delta: StateDelta::default(),
                error_class: Some("cancelled".into()),
                route: Route::Edges,
            });
        }
        let response = self.state.response().map(str::to_owned).or_else(|| {
            self.state
                .messages()
                .iter()
                .rev()
                .find(|m| m.role == Role::Assistant)
                .map(|m| m.content.clone())
        });
        let usage = *self.state.usage();
        let (status, error) = match end {
            End::Completed if paused => (ExecutionStatus::Waiting, None),
            End::Completed => {
                self.log.push(EventKind::ExecutionCompleted {
                    response: response.clone(),
                    usage,
                });
                (ExecutionStatus::Completed, None)
            }
            End::Failed(failure) => {
                self.log.push(EventKind::ExecutionFailed {
                    error: failure.message.clone(),
                    class: failure.class.clone(),
                });
                (ExecutionStatus::Failed, Some(failure))
            }
            End::Cancelled(reason) => {
                self.log.push(EventKind::ExecutionCancelled {
                    reason: reason.clone(),
                });
                (
                    ExecutionStatus::Cancelled,
                    Some(ExecutionFailure {
                        class: "cancelled".into(),
                        message: reason,
                        node_id: None,
                    }),
                )
            }
        };
        if self.top_level
            && status != ExecutionStatus::Waiting
            && let Some(observer) = &self.observer
        {
            observer.execution_ended(status, u64::try_from(now - self.started_at_ms).unwrap_or(0));
        }
        let storage_error = self
            .record_end(status, response.as_deref(), error.as_ref())
            .await;
        self.log.close();
        // Node contexts hold the sink (and so the log) only while they run; all are gone now.
        drop(self.sink);
        let events = self.log.take_or_clone();
        let sizes = &self.plan.last_sizes;
        if !self.quiet {
            sizes.events.store(events.len(), Ordering::Relaxed);
        }
        sizes
            .node_runs
            .store(self.node_runs.len(), Ordering::Relaxed);
        let state = Arc::unwrap_or_clone(self.state);
        let (messages, variables, errors, state) = if self.keep_state {
            (
                state.messages().to_vec(),
                state.variables().clone(),
                state.errors().to_vec(),
                Some(state),
            )
        } else {
            let (messages, variables, errors) = state.into_result_parts();
            (messages, variables, errors, None)
        };
        let result = ExecutionResult {
            execution_id: self.exec_id.to_string(),
            status,
            response,
            messages,
            variables,
            usage,
            node_runs: self.node_runs,
            errors,
            events,
            error,
            owner: self.owner,
            started_at_ms: self.started_at_ms,
            duration_ms: u64::try_from(now - self.started_at_ms).unwrap_or(0),
            storage_error,
        };
        (result, state)
    }

    /// A durable execution's end: the last steps, then the outcome (or, paused, the `waiting`
    /// status, its last events and when to wake it). Returns what could not be written.
    async fn record_end(
        &mut self,
        status: ExecutionStatus,
        response: Option<&str>,
        error: Option<&ExecutionFailure>,
    ) -> Option<String> {
        self.writer.as_ref()?;
        self.stage_steps();
        let writer = self.writer.as_mut()?;
        // Ending, the last steps are written with the outcome (one transaction); pausing, first.
        let written = if status == ExecutionStatus::Waiting {
            writer.finish().await.map_or(Ok(Vec::new()), Err)
        } else {
            writer.settle().await
        };
        let last_steps = match written {
            Ok(steps) => steps,
            // Steps are missing: the execution is not ended in the store, so it stays
            // resumable once the store is back.
            Err(error) => return Some(writer.report(error)),
        };
        let store = writer.store.clone();
        let events = self.take_unstaged_events();
        let id = &*self.exec_id;
        let now = self.services.clock.now_ms();
        let written = if status == ExecutionStatus::Waiting {
            crate::failpoint::hit("engine.before_waiting");
            let mut written = Ok(());
            if !events.is_empty() {
                written = store.append_events(id, &events).await.map(|_| ());
            }
            if written.is_ok() {
                written = store
                    .set_execution_status(id, crate::store::ExecutionStatus::Waiting, now)
                    .await
                    .map(|_| ());
            }
            if written.is_ok() {
                written = store.set_wake_at(id, self.wake_at).await;
            }
            written
        } else {
            let usage = *self.state.usage();
            let outcome = crate::store::ExecutionOutcome {
                status: match status {
                    ExecutionStatus::Completed => crate::store::ExecutionStatus::Completed,
                    ExecutionStatus::Cancelled => crate::store::ExecutionStatus::Cancelled,
                    _ => crate::store::ExecutionStatus::Failed,
                },
                output: Some(serde_json::json!({
                    "variables": self.state.variables(),
                    "errors": self.state.errors(),
                })),
                response: response.map(str::to_owned),
                error: error.map(|e| e.message.clone()),
                prompt_tokens: i64::try_from(usage.prompt_tokens).unwrap_or(i64::MAX),
                completion_tokens: i64::try_from(usage.completion_tokens).unwrap_or(i64::MAX),
                cost: usage.cost,
                finished_at: now,
                events,
            };
            crate::failpoint::hit("engine.before_complete");
            let written = match self.writer.as_mut() {
                Some(writer) => writer.write_end(id, &last_steps, outcome).await,
                None => return None,
            };
            let written = match (written, self.writer.as_ref()) {
                (Ok(record), Some(writer)) => {
                    writer.ended(record);
                    Ok(())
                }
                (written, _) => written.map(|_| ()),
            };
            crate::failpoint::hit("engine.after_complete");
            written
        };
        written
            .err()
            .map(|e| writer_report(self.writer.as_mut(), e))
    }
}

type NodeFuture<'p> =
    futures::future::CatchUnwind<AssertUnwindSafe<BoxFuture<'p, Result<NodeOutput>>>>;

/// A node run just started: its first attempt's future and what further attempts need.
struct Launch<'p> {
    node: &'p PlanNode,
    fut: NodeFuture<'p>,
    /// A context for further attempts (only when the retry policy allows them).
    retry_ctx: Option<NodeContext>,
    /// The current attempt's token, cancelled when it times out.
    cancel: CancelToken,
    timeout_ms: u64,
    act: Activation,
    slot: u64,
    started_at_ms: i64,
    /// Its intent, when it is to be written with the staged steps before the first poll
    /// (`fuse` in [`Run::start`]).
    /// Boxed: a launch is moved a few times, and most have none.
    intent: Option<Box<crate::store::NodeRunRecord>>,
}

impl Launch<'_> {
    fn completion(self, attempt: u32, result: Result<NodeOutput>) -> Completion {
        Completion {
            slot: self.slot,
            act: self.act,
            attempt,
            started_at_ms: self.started_at_ms,
            result,
        }
    }

    fn may_retry(&self, error: &Error, attempt: u32) -> bool {
        let retry = &self.node.policy.retry;
        attempt - self.act.attempt + 1 < retry.max_attempts
            && self.retry_ctx.is_some()
            && retry.retries(error)
    }
}

/// Finishes a node run that did not complete on its first poll: the rest of the attempt under
/// its timeout, then retries by the node's policy (`first_error`: the first attempt already
/// failed).
async fn drive(
    mut launch: Launch<'_>,
    first_error: Option<Error>,
    log: Arc<EventLog>,
    nodes: CancelToken,
) -> Completion {
    let spec = launch.node.spec.clone();
    let mut attempt = launch.act.attempt;
    let mut error = match first_error {
        Some(error) => error,
        None => {
            match finish_attempt(&mut launch.fut, &launch.cancel, &spec, launch.timeout_ms).await {
                Ok(output) => return launch.completion(attempt, Ok(output)),
                Err(error) => error,
            }
        }
    };
    loop {
        if !launch.may_retry(&error, attempt) || nodes.is_cancelled() {
            return launch.completion(attempt, Err(error));
        }
        let tries = attempt - launch.act.attempt + 1;
        let retry = &launch.node.policy.retry;
        let Some(template) = launch.retry_ctx.as_ref() else {
            return launch.completion(attempt, Err(error));
        };
        let seed = fnv(&template.execution_id) ^ fnv(spec.id.as_str()).rotate_left(17);
        let mut delay_ms = retry.delay_ms(tries, seed ^ u64::from(template.iteration));
        if let Error::Model {
            retry_after_ms: Some(after),
            ..
        } = &error
        {
            delay_ms = delay_ms.max(*after);
        }
        log.push(EventKind::NodeRetrying {
            node_id: spec.id.0.clone(),
            attempt,
            delay_ms,
            error: error.to_string(),
        });
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        attempt += 1;
        let last = attempt - launch.act.attempt + 1 >= retry.max_attempts;
        let Some(mut ctx) = (if last {
            launch.retry_ctx.take()
        } else {
            launch.retry_ctx.clone()
        }) else {
            return launch.completion(attempt, Err(error));
        };
        ctx.attempt = attempt;
        ctx.cancel = nodes.child_token();
        let cancel = ctx.cancel.clone();
        log.push(EventKind::NodeStarted {
            node_id: spec.id.0.clone(),
            kind: spec.kind.0.clone(),
            iteration: ctx.iteration,
            attempt,
        });
        let span = node_span(&ctx.execution_id, &spec, ctx.iteration, attempt);
        let run = launch.node.node.run(ctx);
        let run = if span.is_disabled() {
            run
        } else {
            Box::pin(run.instrument(span))
        };
        let mut fut = AssertUnwindSafe(run).catch_unwind();
        match finish_attempt(&mut fut, &cancel, &spec, launch.timeout_ms).await {
            Ok(output) => return launch.completion(attempt, Ok(output)),
            Err(e) => error = e,
        }
    }
}

/// The `node` span of one attempt, at `debug` level (disabled, and then free, unless a
/// subscriber wants it).
fn node_span(execution_id: &str, spec: &NodeSpec, iteration: u32, attempt: u32) -> tracing::Span {
    tracing::debug_span!(
        target: "chatter_core::engine",
        "node",
        execution_id = %execution_id,
        node_id = %spec.id.0,
        kind = %spec.kind.0,
        iteration,
        attempt,
    )
}

/// Awaits an attempt under its timeout; a timeout cancels the attempt's token.
async fn finish_attempt(
    fut: &mut NodeFuture<'_>,
    cancel: &CancelToken,
    spec: &NodeSpec,
    timeout_ms: u64,
) -> Result<NodeOutput> {
    match tokio::time::timeout(Duration::from_millis(timeout_ms), fut).await {
        Ok(outcome) => outcome_result(outcome, spec),
        Err(_) => {
            cancel.cancel();
            Err(Error::Timeout {
                what: format!("node `{}`", spec.id),
                after_ms: timeout_ms,
            })
        }
    }
}

/// A node future's outcome as a result: a panic becomes an `internal` node error.
fn outcome_result(
    outcome: std::thread::Result<Result<NodeOutput>>,
    spec: &NodeSpec,
) -> Result<NodeOutput> {
    match outcome {
        Ok(result) => result,
        Err(panic) => {
            let detail = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            Err(Error::Node {
                node_id: spec.id.0.clone(),
                class: ErrorClass::Internal,
                message: format!("node panicked: {detail}"),
            })
        }
    }
}

/// A node run as stored.
fn node_run_record(execution_id: &str, run: &NodeRun) -> crate::store::NodeRunRecord {
    let mut record = crate::store::NodeRunRecord::started(
        execution_id,
        run.node_id.as_str(),
        i64::from(run.iteration),
        i64::from(run.attempt.max(1)),
        run.started_at_ms,
    );
    record.status = match run.status {
        NodeRunStatus::Running => crate::store::NodeRunStatus::Running,
        NodeRunStatus::Completed => crate::store::NodeRunStatus::Completed,
        NodeRunStatus::Failed => crate::store::NodeRunStatus::Failed,
        NodeRunStatus::Skipped => crate::store::NodeRunStatus::Skipped,
        NodeRunStatus::Cancelled => crate::store::NodeRunStatus::Cancelled,
        NodeRunStatus::Waiting => crate::store::NodeRunStatus::Waiting,
    };
    let duration = i64::try_from(run.duration_ms).unwrap_or(i64::MAX);
    if run.status != NodeRunStatus::Waiting {
        record.finished_at = Some(run.started_at_ms.saturating_add(duration));
        record.duration_ms = Some(duration);
    }
    let usage = run.delta.usage.unwrap_or_default();
    record.prompt_tokens = i64::try_from(usage.prompt_tokens).unwrap_or(i64::MAX);
    record.completion_tokens = i64::try_from(usage.completion_tokens).unwrap_or(i64::MAX);
    record.cost = usage.cost;
    record.error.clone_from(&run.error);
    record.output = (!run.output.is_null()).then(|| run.output.value().clone());
    record.route = route_to_json(&run.route);
    record.error_class.clone_from(&run.error_class);
    record
}

/// Hands a storage failure to the host through the writer, returning its text.
fn writer_report(writer: Option<&mut StepWriter>, error: Error) -> String {
    match writer {
        Some(writer) => writer.report(error),
        None => error.to_string(),
    }
}
