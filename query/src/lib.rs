//! SQL layer: arrives with the SQL issue (DataFusion over basalt-storage).
