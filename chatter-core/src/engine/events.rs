//! The per-execution event log and the streams that read it.
//!
//! Every event of an execution is appended to one log (numbered from 1, stamped by the
//! engine's clock). A subscriber is a cursor into that log, so it can never lag or miss an event:
//! a slow subscriber simply reads further behind, and one that subscribes late (or resumes after
//! `Last-Event-ID`) starts from any sequence number. Memory is bounded by the execution: the log
//! is what `ExecutionResult.events` returns anyway, and it is freed with the execution.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures::Stream;
use futures::stream::BoxStream;
use tokio::sync::Notify;

use super::node::Clock;
use crate::event::{Event, EventKind, EventSink};

struct Inner {
    events: Vec<Event>,
    closed: bool,
}

/// The event log of one execution.
pub(crate) struct EventLog {
    execution_id: String,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
    /// While set, pushed events are dropped (a run whose events are discarded, or a resume
    /// replaying steps whose events are stored). Outside the lock: nodes ask it before they
    /// build an event.
    muted: AtomicBool,
    notify: Notify,
    subscribers: AtomicUsize,
}

impl EventLog {
    pub(crate) fn new(execution_id: &str, clock: Arc<dyn Clock>, capacity: usize) -> EventLog {
        EventLog {
            execution_id: execution_id.to_owned(),
            clock,
            inner: Mutex::new(Inner {
                events: Vec::with_capacity(capacity),
                closed: false,
            }),
            muted: AtomicBool::new(false),
            notify: Notify::new(),
            subscribers: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends an event, numbering and stamping it; returns its sequence number.
    pub(crate) fn push(&self, kind: EventKind) -> u64 {
        if self.is_muted() {
            return 0;
        }
        self.push_at(self.clock.now_ms(), kind)
    }

    /// Appends an event stamped `ts_ms` (read from the same clock by the caller).
    pub(crate) fn push_at(&self, ts_ms: i64, kind: EventKind) -> u64 {
        let seq = {
            let mut inner = self.lock();
            if inner.closed || self.is_muted() {
                // Late events from a node future that outlived its execution are dropped: the
                // log is final once the execution ended.
                return 0;
            }
            let seq = inner.events.len() as u64 + 1;
            inner.events.push(Event {
                execution_id: self.execution_id.clone(),
                seq,
                ts_ms,
                kind,
            });
            seq
        };
        if self.subscribers.load(Ordering::Acquire) > 0 {
            self.notify.notify_waiters();
        }
        seq
    }

    /// Starts the log with the stored events of a resumed execution: new events are numbered
    /// after them, and streams read them first.
    pub(crate) fn prefill(&self, events: Vec<Event>) {
        let mut inner = self.lock();
        inner.events = events;
        // Numbering stays contiguous only if the stored events were.
        for (i, event) in inner.events.iter_mut().enumerate() {
            event.seq = i as u64 + 1;
        }
    }

    /// Drops (`true`) or keeps (`false`) the events pushed from now on.
    pub(crate) fn set_muted(&self, muted: bool) {
        self.muted.store(muted, Ordering::Release);
    }

    /// Whether pushed events are dropped ([`EventLog::set_muted`]).
    pub(crate) fn is_muted(&self) -> bool {
        self.muted.load(Ordering::Acquire)
    }

    /// The number of events so far (the last sequence number).
    pub(crate) fn len(&self) -> u64 {
        self.lock().events.len() as u64
    }

    /// `f` of each event with `seq > after`, read in place (no copy of the events).
    pub(crate) fn map_after<T>(&self, after: u64, f: impl FnMut(&Event) -> T) -> Vec<T> {
        let inner = self.lock();
        let from = usize::try_from(after)
            .unwrap_or(usize::MAX)
            .min(inner.events.len());
        inner.events[from..].iter().map(f).collect()
    }

    /// Ends the log: streams finish once they have read everything.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_waiters();
    }

    /// A copy of the events so far.
    pub(crate) fn snapshot(&self) -> Vec<Event> {
        self.lock().events.clone()
    }

    /// The events, taken out when nobody else can read them, else copied.
    pub(crate) fn take_or_clone(self: &Arc<Self>) -> Vec<Event> {
        let mut inner = self.lock();
        if Arc::strong_count(self) == 1 {
            std::mem::take(&mut inner.events)
        } else {
            inner.events.clone()
        }
    }

    /// Events with `seq > after`, then (while the execution runs) each new one as it comes.
    pub(crate) fn stream(self: &Arc<Self>, after: u64) -> EventStream {
        self.subscribers.fetch_add(1, Ordering::AcqRel);
        let guard = SubscriberGuard(self.clone());
        let stream = futures::stream::unfold(
            (guard, usize::try_from(after).unwrap_or(usize::MAX)),
            |(guard, cursor)| async move {
                let event = guard.0.next_event(cursor).await?;
                Some((event, (guard, cursor + 1)))
            },
        );
        EventStream {
            inner: Box::pin(stream),
        }
    }
}

impl EventLog {
    /// The event at index `cursor`, waiting for it while the log is open.
    async fn next_event(&self, cursor: usize) -> Option<Event> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let inner = self.lock();
                if let Some(event) = inner.events.get(cursor) {
                    return Some(event.clone());
                }
                if inner.closed {
                    return None;
                }
            }
            notified.await;
        }
    }
}

/// Closes the log when dropped, so streams end even if the execution's task dies.
pub(crate) struct CloseOnDrop(pub(crate) Arc<EventLog>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

struct SubscriberGuard(Arc<EventLog>);

impl Drop for SubscriberGuard {
    fn drop(&mut self) {
        self.0.subscribers.fetch_sub(1, Ordering::AcqRel);
    }
}

impl EventSink for EventLog {
    fn emit(&self, kind: EventKind) {
        self.push(kind);
    }

    fn keeps_events(&self) -> bool {
        !self.is_muted()
    }
}

/// The events of one execution, in sequence order, as a [`Stream`]. It ends after the
/// execution's last event. It never skips an event, however slowly it is read.
pub struct EventStream {
    inner: BoxStream<'static, Event>,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

impl Stream for EventStream {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.inner.as_mut().poll_next(cx)
    }
}
