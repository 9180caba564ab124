//! Postgres-wire server: arrives with the wire-server issue.
