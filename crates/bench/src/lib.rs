//! benchmark harness
