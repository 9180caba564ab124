//! The lowest layer: errors and their SQLSTATEs, statement limits,
//! interrupts, and helpers over SQL names and syntax trees.

pub(crate) mod complexity;
pub mod error;
pub(crate) mod interrupt;
pub mod sqlstate;
pub(crate) mod syntax;
