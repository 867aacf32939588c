//! `tidings-bench`: load generator for the relay (work in progress).

fn main() {}
