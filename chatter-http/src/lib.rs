//! # chatter-http
//!
//! Chatter's HTTP server ([`server`], `chatter serve`) and the `chatter` command-line tool.
//!
//! ```
//! use clap::Parser;
//! use chatter_http::cli::{Cli, run};
//!
//! let dir = std::env::temp_dir().join(format!("chatter-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let file = dir.join("flow.json");
//! std::fs::write(&file, r#"{"nodes": [{"id": "start", "type": "start"}, {"id": "end", "type": "end"}],
//!                          "edges": [{"source": "start", "target": "end"}]}"#)?;
//! let cli = Cli::parse_from(["chatter", "validate", file.to_str().unwrap(), "--format", "json"]);
//! let mut out = Vec::new();
//! let code = run(cli, &mut out)?;
//! assert_eq!(code, 0);
//! assert!(String::from_utf8(out)?.contains("\"valid\": true"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod cli;
pub mod error;
pub mod server;

pub use error::Error;
