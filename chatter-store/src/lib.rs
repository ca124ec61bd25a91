//! # chatter-store
//!
//! Storage backends for Chatter behind `chatter_core::store`'s traits.
