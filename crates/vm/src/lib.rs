//! interpreter, runtime maps, helpers, contexts
