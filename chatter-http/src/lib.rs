//! # chatter-http
//!
//! Chatter's HTTP server (to come) and the `chatter` command-line tool.
//!
//! ```
//! assert_eq!(chatter_http::NAME, "chatter");
//! ```

/// The name of the command-line tool.
pub const NAME: &str = "chatter";
