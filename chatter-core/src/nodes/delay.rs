//! The `delay` node: waits, then follows its out-edges.
//!
//! **Config:**
//! - `delay_type`: `fixed` (default), `random` or `exponential`.
//! - `fixed`: `delay_ms` (0..=3 600 000, default 1 000).
//! - `random`: uniformly in `[min_delay_ms, max_delay_ms]` (defaults 0 and 1 000; `min` must not
//!   exceed `max`).
//! - `exponential`: `base_delay_ms * multiplier ^ iteration` (defaults 1 000 and 2; `multiplier`
//!   1..=10), where `iteration` is the node's iteration (0 on its first pass), capped at
//!   `max_delay_cap_ms` (default 60 000).
//!
//! The wait uses tokio's clock (tests can pause it) and ends early, failing with
//! [`crate::Error::Cancelled`], when the node is cancelled.
//!
//! **Reads:** nothing. **Writes:** nothing. Output: `{delay_ms}`, the wait chosen.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use serde_json::json;

use crate::definition::NodeSpec;
use crate::engine::{Node, NodeContext, NodeFactory, NodeOutput};
use crate::error::Result;
use crate::nodes::common::{Config, cancellable};

const HOUR_MS: u64 = 3_600_000;

/// How a delay is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum DelayKind {
    /// Always `ms`.
    Fixed {
        /// The wait.
        ms: u64,
    },
    /// Uniform in `[min_ms, max_ms]`.
    Random {
        /// Shortest wait.
        min_ms: u64,
        /// Longest wait.
        max_ms: u64,
    },
    /// `base_ms * multiplier ^ iteration`, at most `cap_ms`.
    Exponential {
        /// First wait.
        base_ms: u64,
        /// Growth per iteration.
        multiplier: f64,
        /// Longest wait.
        cap_ms: u64,
    },
}

impl DelayKind {
    /// The wait for a node run at `iteration`, in milliseconds.
    pub fn delay_ms(&self, iteration: u32) -> u64 {
        match *self {
            DelayKind::Fixed { ms } => ms,
            DelayKind::Random { min_ms, max_ms } => rand::rng().random_range(min_ms..=max_ms),
            DelayKind::Exponential {
                base_ms,
                multiplier,
                cap_ms,
            } => {
                let exponent = i32::try_from(iteration).unwrap_or(i32::MAX);
                let wait = base_ms as f64 * multiplier.powi(exponent);
                if wait.is_finite() && wait < cap_ms as f64 {
                    wait.round() as u64
                } else {
                    cap_ms
                }
            }
        }
    }
}

/// Config of a `delay` node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DelayConfig {
    /// The delay.
    pub kind: DelayKind,
}

impl DelayConfig {
    /// Reads and checks the config of `spec`.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Config`] naming the node and key for a wrong type or range, or a
    /// `min_delay_ms` above `max_delay_ms`.
    pub fn from_spec(spec: &NodeSpec) -> Result<DelayConfig> {
        let c = Config::new(spec);
        let ms = |key: &str, default: u64| -> Result<u64> {
            Ok(c.integer(key, 0, HOUR_MS)?.unwrap_or(default))
        };
        let kind = match c.one_of("delay_type", &["fixed", "random", "exponential"])? {
            Some("random") => {
                let (min_ms, max_ms) = (ms("min_delay_ms", 0)?, ms("max_delay_ms", 1_000)?);
                if min_ms > max_ms {
                    return Err(c.error(
                        "min_delay_ms",
                        format!("({min_ms}) must not exceed `max_delay_ms` ({max_ms})"),
                    ));
                }
                DelayKind::Random { min_ms, max_ms }
            }
            Some("exponential") => DelayKind::Exponential {
                base_ms: ms("base_delay_ms", 1_000)?,
                multiplier: c.number("multiplier", 1.0, 10.0)?.unwrap_or(2.0),
                cap_ms: ms("max_delay_cap_ms", 60_000)?,
            },
            _ => DelayKind::Fixed {
                ms: ms("delay_ms", 1_000)?,
            },
        };
        Ok(DelayConfig { kind })
    }
}

/// Builds [`DelayNode`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct DelayFactory;

impl NodeFactory for DelayFactory {
    fn build(&self, spec: &NodeSpec) -> Result<Arc<dyn Node>> {
        Ok(Arc::new(DelayNode {
            config: DelayConfig::from_spec(spec)?,
        }))
    }
}

/// Waits.
#[derive(Debug, Clone)]
pub struct DelayNode {
    config: DelayConfig,
}

#[async_trait]
impl Node for DelayNode {
    async fn run(&self, ctx: NodeContext) -> Result<NodeOutput> {
        let wait = self.config.kind.delay_ms(ctx.iteration);
        cancellable(&ctx, async {
            tokio::time::sleep(Duration::from_millis(wait)).await;
            Ok(())
        })
        .await?;
        Ok(NodeOutput {
            output: json!({ "delay_ms": wait }).into(),
            ..NodeOutput::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Route, Services};
    use crate::nodes::testing::{build, context, spec};
    use crate::state::State;
    use serde_json::Value;
    use tokio::time::Instant;

    async fn timed(config: Value, iteration: u32) -> (NodeOutput, u128) {
        let s = spec("wait", "delay", config);
        let node = build(&DelayFactory, &s);
        let (mut ctx, _) = context(s, State::default(), Services::default());
        ctx.iteration = iteration;
        let start = Instant::now();
        let out = node.run(ctx).await.unwrap();
        (out, start.elapsed().as_millis())
    }

    #[tokio::test(start_paused = true)]
    async fn fixed_delay_waits_exactly() {
        let (out, elapsed) = timed(json!({"delay_ms": 250}), 0).await;
        assert_eq!(elapsed, 250);
        assert_eq!(out.output, json!({"delay_ms": 250}));
        assert_eq!(out.route, Route::Edges);
        assert!(out.delta.is_empty());
        let (_, elapsed) = timed(json!({}), 0).await;
        assert_eq!(elapsed, 1_000);
    }

    #[tokio::test(start_paused = true)]
    async fn random_delay_stays_in_range() {
        for _ in 0..20 {
            let (out, elapsed) = timed(
                json!({"delay_type": "random", "min_delay_ms": 100, "max_delay_ms": 140}),
                0,
            )
            .await;
            assert!((100..=140).contains(&elapsed), "{elapsed}");
            assert_eq!(out.output["delay_ms"].as_u64().unwrap() as u128, elapsed);
        }
        let (_, elapsed) = timed(
            json!({"delay_type": "random", "min_delay_ms": 7, "max_delay_ms": 7}),
            0,
        )
        .await;
        assert_eq!(elapsed, 7);
    }

    #[tokio::test(start_paused = true)]
    async fn exponential_delay_grows_per_iteration_and_is_capped() {
        let config = json!({"delay_type": "exponential", "base_delay_ms": 100, "multiplier": 3, "max_delay_cap_ms": 2000});
        let mut waits = Vec::new();
        for iteration in 0..5 {
            waits.push(timed(config.clone(), iteration).await.1);
        }
        assert_eq!(waits, [100, 300, 900, 2000, 2000]);
        let kind = DelayConfig::from_spec(&spec("w", "delay", config))
            .unwrap()
            .kind;
        assert_eq!(kind.delay_ms(u32::MAX), 2000);
    }

    #[tokio::test(start_paused = true)]
    async fn cancellation_ends_the_wait() {
        let s = spec("wait", "delay", json!({"delay_ms": 3_600_000}));
        let node = build(&DelayFactory, &s);
        let (ctx, _) = context(s, State::default(), Services::default());
        let cancel = ctx.cancel.clone();
        let start = Instant::now();
        let task = tokio::spawn(async move { node.run(ctx).await });
        tokio::time::sleep(Duration::from_millis(40)).await;
        cancel.cancel();
        let err = task.await.unwrap().unwrap_err();
        assert_eq!(err.to_string(), "cancelled: node `wait` was cancelled");
        assert_eq!(start.elapsed().as_millis(), 40);
    }

    #[test]
    fn bad_configs_are_refused() {
        let cases = [
            (
                json!({"delay_type": "linear"}),
                "config `delay_type` must be one of fixed, random, exponential, found \"linear\"",
            ),
            (
                json!({"delay_ms": -1}),
                "config `delay_ms` must be between 0 and 3600000, found -1",
            ),
            (
                json!({"delay_type": "random", "min_delay_ms": 5, "max_delay_ms": 4}),
                "config `min_delay_ms` (5) must not exceed `max_delay_ms` (4)",
            ),
            (
                json!({"delay_type": "exponential", "multiplier": 11}),
                "config `multiplier` must be between 1 and 10, found 11",
            ),
        ];
        for (config, message) in cases {
            let err = DelayFactory
                .build(&spec("wait", "delay", config))
                .err()
                .unwrap();
            assert_eq!(
                err.to_string(),
                format!("configuration error: node `wait`: {message}")
            );
        }
    }
}
