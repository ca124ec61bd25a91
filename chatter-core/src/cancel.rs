//! [`CancelToken`]: how a node run (and each tool call it makes) learns that it must stop.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

/// A cancellation token of a node run ([`crate::NodeContext::cancel`]) or of a tool call
/// ([`crate::ToolContext::cancel`]): cancelled when the execution is cancelled, when the
/// attempt times out, or (a tool call's) when the call times out.
///
/// A token is cancelled when it or any token it was made from ([`CancelToken::child_token`])
/// is. Unlike `tokio_util`'s token, a parent does not keep a list of its children: making,
/// cloning, asking and dropping a token takes no lock (the engine makes one per node run and
/// per tool call, and most are dropped unused). Only waiting ([`CancelToken::cancelled`])
/// registers with the token and its ancestors.
///
/// ```
/// use chatter_core::CancelToken;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let run = CancelToken::new();
/// let call = run.child_token();
/// assert!(!call.is_cancelled());
/// run.cancel();
/// assert!(call.is_cancelled());
/// call.cancelled().await; // already cancelled: ready at once
/// # });
/// ```
#[derive(Clone, Default)]
pub struct CancelToken(Arc<Node>);

#[derive(Default)]
struct Node {
    cancelled: AtomicBool,
    /// Wakes the waiters registered with this token when it is cancelled.
    notify: Notify,
    parent: Option<CancelToken>,
}

impl CancelToken {
    /// A token that nothing else cancels.
    pub fn new() -> CancelToken {
        CancelToken::default()
    }

    /// A token cancelled with this one (and by itself: cancelling it leaves this one be).
    pub fn child_token(&self) -> CancelToken {
        CancelToken(Arc::new(Node {
            cancelled: AtomicBool::new(false),
            notify: Notify::new(),
            parent: Some(self.clone()),
        }))
    }

    /// Cancels this token and every token made from it, and wakes whoever waits on them.
    pub fn cancel(&self) {
        if !self.0.cancelled.swap(true, Ordering::SeqCst) {
            self.0.notify.notify_waiters();
        }
    }

    /// Whether this token or one it was made from is cancelled.
    pub fn is_cancelled(&self) -> bool {
        let mut token = Some(self);
        while let Some(t) = token {
            if t.0.cancelled.load(Ordering::SeqCst) {
                return true;
            }
            token = t.0.parent.as_ref();
        }
        false
    }

    /// Completes when the token is cancelled (at once if it is already).
    pub async fn cancelled(&self) {
        loop {
            // Registered with the token and each ancestor before the flags are read: a
            // cancellation after the read wakes one of them.
            let mut waits: Vec<Pin<Box<Notified<'_>>>> = Vec::new();
            let mut token = Some(self);
            while let Some(t) = token {
                let mut wait = Box::pin(t.0.notify.notified());
                wait.as_mut().enable();
                waits.push(wait);
                token = t.0.parent.as_ref();
            }
            if self.is_cancelled() {
                return;
            }
            futures::future::select_all(waits).await;
        }
    }
}

impl std::fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelToken")
            .field("is_cancelled", &self.is_cancelled())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_cancellation_reaches_every_token_made_from_it_and_wakes_their_waiters() {
        let root = CancelToken::new();
        let node = root.child_token();
        let call = node.child_token();
        let sibling = root.child_token();

        // Cancelling a child leaves its parent and siblings be.
        call.cancel();
        assert!(call.is_cancelled());
        assert!(!node.is_cancelled() && !root.is_cancelled() && !sibling.is_cancelled());

        // A waiter on a grandchild wakes when the root is cancelled later.
        let grandchild = node.child_token();
        let waiter = tokio::spawn({
            let grandchild = grandchild.clone();
            async move { grandchild.cancelled().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "nothing cancelled it yet");
        root.cancel();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .unwrap();
        assert!(grandchild.is_cancelled() && sibling.is_cancelled() && node.is_cancelled());
        // Cancelled already: ready at once; cancelling twice is harmless.
        root.cancel();
        tokio::time::timeout(Duration::from_millis(100), sibling.cancelled())
            .await
            .unwrap();
        // A clone is the same token.
        let other = CancelToken::new();
        let clone = other.clone();
        clone.cancel();
        assert!(other.is_cancelled());
        assert_eq!(format!("{other:?}"), "CancelToken { is_cancelled: true }");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancellation_racing_a_waiter_is_never_lost() {
        for _ in 0..200 {
            let root = CancelToken::new();
            let child = root.child_token();
            let waiter = tokio::spawn({
                let child = child.clone();
                async move { child.cancelled().await }
            });
            let canceller = tokio::spawn(async move { root.cancel() });
            canceller.await.unwrap();
            tokio::time::timeout(Duration::from_secs(5), waiter)
                .await
                .expect("a waiter racing the cancellation still wakes")
                .unwrap();
        }
    }
}
