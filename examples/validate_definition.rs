//! Validates a definition file given on the command line.

fn main() {}
