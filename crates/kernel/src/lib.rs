//! bpf(2) layer: maps, load, test-run, info
