//! Criterion benchmarks of Chatter (`cargo bench -p chatter-benches`).
