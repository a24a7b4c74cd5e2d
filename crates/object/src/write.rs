//! ELF writer (see below).
