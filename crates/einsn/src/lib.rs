//! the EInsn operation set
