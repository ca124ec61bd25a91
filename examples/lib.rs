//! Runnable examples of Chatter; see `examples/README.md`.
