//! Engine benchmarks (filled below).

fn main() {}
