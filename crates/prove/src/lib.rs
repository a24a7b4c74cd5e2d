//! SMT equivalence of native emits against proof sequences
