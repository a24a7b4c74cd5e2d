//! branch targets, CFG, subprograms, liveness
