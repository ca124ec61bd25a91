//! Ready-made tools: [`stub::StubTools`] (fixed results from a JSON file, for tests and examples)
//! and, with the `http-tool` cargo feature, [`http::HttpTool`] (an HTTP request limited to an
//! allow-list of hosts) with the `http` node kind ([`http::HttpNode`]).

#[cfg(feature = "http-tool")]
pub mod http;
pub mod stub;

#[cfg(feature = "http-tool")]
pub use http::{HostAllowList, HttpNode, HttpNodeFactory, HttpTool, HttpToolConfig};
pub use stub::{RecordedCall, StubTool, StubTools};
