//! The Postgres backend (work in progress).
