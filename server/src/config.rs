//! `basalt serve`'s settings: a TOML file, overridden by command-line flags.
//!
//! ```toml
//! listen = "127.0.0.1:5433"
//! data = "basalt-data"
//! max_connections = 100
//! synchronous_commit = true
//! query_memory_limit = "4GiB"   # all running queries together; default: half the RAM
//! cache_size = "1GiB"           # decoded column chunks
//! allow_files = "/srv/imports"  # COPY FROM/TO 'path' confined to here
//! network_threads = 2           # default: one per core
//! tls_cert = "server.crt"       # PEM; with tls_key, clients may use TLS
//! tls_key = "server.key"
//! [users]                       # any user here turns on SCRAM-SHA-256 for all
//! alice = "secret"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: String,
    /// Data directory; created if missing.
    pub data: Option<PathBuf>,
    /// Connections served at once; more are refused with 53300.
    pub max_connections: usize,
    /// User name to password. Empty: trust, for loopback clients only.
    pub users: BTreeMap<String, String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Acknowledge a commit only once its WAL record is on disk.
    pub synchronous_commit: bool,
    /// Memory all running queries may hold together, e.g. "4GiB".
    pub query_memory_limit: Option<String>,
    /// Decoded column chunks kept in memory, e.g. "1GiB".
    pub cache_size: Option<String>,
    /// Seconds to wait on shutdown for running statements to finish.
    pub shutdown_timeout_secs: u64,
    /// The directory clients' `COPY ... FROM/TO 'path'` may use; none if unset.
    pub allow_files: Option<PathBuf>,
    /// Threads answering clients (queries run on a pool of their own).
    /// Unset: one per core, each pinned to its core, with connections
    /// following their clients' cores between transactions.
    pub network_threads: Option<usize>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: "127.0.0.1:5433".to_string(),
            data: None,
            max_connections: 100,
            users: BTreeMap::new(),
            tls_cert: None,
            tls_key: None,
            synchronous_commit: true,
            query_memory_limit: None,
            cache_size: None,
            shutdown_timeout_secs: 30,
            allow_files: None,
            network_threads: None,
        }
    }
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        Config::from_toml(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    pub fn from_toml(text: &str) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        config.check()?;
        Ok(config)
    }

    /// Settings that cannot work together are refused before anything starts.
    pub fn check(&self) -> Result<()> {
        if self.max_connections == 0 {
            return Err(Error::Config("max_connections must be at least 1".into()));
        }
        if self.network_threads == Some(0) {
            return Err(Error::Config("network_threads must be at least 1".into()));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(Error::Config(
                "tls_cert and tls_key must be given together".into(),
            ));
        }
        self.query_memory_bytes()?;
        self.cache_bytes()?;
        Ok(())
    }

    /// The memory all running queries may hold together: the setting, or by
    /// default half the machine's memory, so that a runaway query spills or
    /// fails with 53200 instead of taking the server down. `None` only when
    /// neither is known.
    pub fn query_memory_bytes(&self) -> Result<Option<u64>> {
        match self.query_memory_limit.as_deref() {
            Some(text) => parse_bytes(text).map(Some),
            None => Ok(total_memory_bytes().map(|total| total / 2)),
        }
    }

    /// How many threads answer clients: the setting, or one per core.
    pub fn network_threads(&self) -> usize {
        self.network_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    pub fn cache_bytes(&self) -> Result<Option<u64>> {
        self.cache_size.as_deref().map(parse_bytes).transpose()
    }
}

/// "512MiB", "4GB", "1048576" as bytes.
pub fn parse_bytes(text: &str) -> Result<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => {
            return Err(Error::Config(format!(
                "unknown size unit \"{other}\" in \"{text}\""
            )))
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| Error::Config(format!("invalid size \"{text}\"")))
}

/// The machine's memory, from `/proc/meminfo` (Linux).
fn total_memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_setting() {
        let config = Config::from_toml(
            r#"
            listen = "127.0.0.1:6000"
            data = "/tmp/x"
            max_connections = 7
            synchronous_commit = false
            query_memory_limit = "2GiB"
            cache_size = "64MiB"
            network_threads = 3
            [users]
            alice = "pw"
            "#,
        )
        .unwrap();
        assert_eq!(config.listen, "127.0.0.1:6000");
        assert_eq!(config.max_connections, 7);
        assert!(!config.synchronous_commit);
        assert_eq!(config.query_memory_bytes().unwrap(), Some(2 << 30));
        // Unset, it is half the machine's memory where that is known.
        let default = Config::default().query_memory_bytes().unwrap();
        if let Some(total) = total_memory_bytes() {
            assert_eq!(default, Some(total / 2));
        }
        assert_eq!(config.cache_bytes().unwrap(), Some(64 << 20));
        assert_eq!(config.users["alice"], "pw");
        assert_eq!(config.network_threads(), 3);
        assert!(Config::default().network_threads() >= 1);
    }

    #[test]
    fn refuses_bad_settings() {
        assert!(Config::from_toml("listen = 5").is_err());
        assert!(Config::from_toml("colour = \"blue\"").is_err());
        assert!(Config::from_toml("max_connections = 0").is_err());
        assert!(Config::from_toml("network_threads = 0").is_err());
        assert!(Config::from_toml("tls_cert = \"a.pem\"").is_err());
        assert!(Config::from_toml("cache_size = \"12 parsecs\"").is_err());
    }
}
