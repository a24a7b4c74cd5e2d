//! baseline x86-64 JIT faithful to Linux, with kinsn dispatch (trusted)
