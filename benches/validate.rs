//! Benchmark of the validator (filled in later).

fn main() {}
