//! x86-64 instruction encoders shared by the JIT and native emits (trusted)
