//! Basalt's SQL layer. The DataFusion session arrives with the SQL issue; what
//! is here now is the error-to-SQLSTATE mapping every later layer reports through.

pub mod sqlstate;
