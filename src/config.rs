//! The daemon's TOML config. Unknown fields are errors everywhere, so a typo
//! fails at start (and in `rack-agent check-config`) instead of being ignored.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::bmc::fake::FakeSettings;
use crate::bmc::Protocol;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is invalid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// gRPC listen address. Default `127.0.0.1:50051`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where the SQLite database lives (created 0700). Default `/var/lib/rack-agent`,
    /// or `$STATE_DIRECTORY` under systemd.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// Directory of BMC password files. Default `$CREDENTIALS_DIRECTORY`
    /// (systemd `LoadCredential=`), else `/etc/rack-agent/credentials`.
    #[serde(default)]
    pub credentials_dir: Option<PathBuf>,
    /// Log filter (`info`, `rack_agent=debug`, ...); `RUST_LOG` wins when set.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// The gRPC listener's security.
    #[serde(default)]
    pub api: ApiSettings,
    /// Who may do what; default: the rules of `DESIGN.md` (see config/policy.toml).
    #[serde(default)]
    pub policy_file: Option<PathBuf>,
    /// Prometheus endpoint.
    #[serde(default)]
    pub metrics: MetricsSettings,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub sync: SyncSettings,
    #[serde(default)]
    pub events: EventSettings,
    #[serde(default)]
    pub actions: ActionSettings,
    /// Static inventory: servers the agent owns without an enrol call.
    #[serde(default)]
    pub servers: Vec<ServerEntry>,
    /// FOR TESTS AND DEMOS ONLY: replace every BMC with an in-memory simulator.
    #[serde(default)]
    pub fake_bmc: Option<FakeSettings>,
}

/// The longest any duration setting may be. A day is far beyond any timeout
/// or poll interval that makes sense, and keeps what the daemon computes
/// from them (deadlines from now, the watchdog interval) clear of overflow:
/// `sync.interval = "18446744073709551615s"` passed `check-config`, then
/// panicked the daemon at start ("overflow when adding durations").
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 50051))
}
fn default_log_level() -> String {
    "info".into()
}

/// `[api]`: TLS with client certificates (mTLS) unless plaintext is asked for.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    /// Server certificate and key, and the CA that signs client certificates.
    /// Relative paths are read from the credentials directory.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// Serve plaintext gRPC and trust the caller named in request metadata.
    /// Only allowed on a loopback `listen` address; for tests and demos.
    #[serde(default)]
    pub insecure_plaintext: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// CA bundle that client certificates must chain to.
    pub client_ca_file: PathBuf,
}

/// `[metrics]`: Prometheus text on `http://LISTEN/metrics`.
#[derive(Debug, Clone, Deserialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// Off when unset. Keep it on a local address: it has no authentication.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
}

/// How long the agent waits, per step. Every field has a default.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// One BMC command, from send to answer.
    #[serde(with = "humantime_serde")]
    pub bmc_command: Duration,
    /// A SOFT reboot waits this long for the server to go off before it falls
    /// back to a HARD reboot (and records that it did).
    #[serde(with = "humantime_serde")]
    pub soft_reboot: Duration,
    /// A graceful stop waits this long before forcing the power off.
    #[serde(with = "humantime_serde")]
    pub graceful_stop: Duration,
    /// After a command, how long to wait for the BMC to report the new power state.
    #[serde(with = "humantime_serde")]
    pub power_confirm: Duration,
    /// How often to read the power state while waiting for a change.
    #[serde(with = "humantime_serde")]
    pub confirm_poll: Duration,
    /// On SIGTERM, how long in-flight actions get to finish before they are
    /// left for the next start to recover.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            bmc_command: Duration::from_secs(15),
            soft_reboot: Duration::from_secs(120),
            graceful_stop: Duration::from_secs(120),
            power_confirm: Duration::from_secs(60),
            confirm_poll: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

/// The power-state sync loop.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SyncSettings {
    /// Time between two polls of every BMC.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Up to this much is added at random to each interval, so racks do not
    /// poll in lockstep.
    #[serde(with = "humantime_serde")]
    pub jitter: Duration,
    /// BMCs polled at once.
    pub max_concurrent: usize,
    /// Consecutive failed polls after which the power state becomes UNKNOWN.
    pub unknown_after_failures: u32,
    /// Time between two reads of every BMC's sensors (the power draw and
    /// inlet temperature gauges). `0s` turns the health poll off. It runs
    /// between power passes with the same bound on concurrency and stops
    /// when the next power pass is due, so it never delays one.
    #[serde(with = "humantime_serde")]
    pub health_interval: Duration,
}

impl Default for SyncSettings {
    fn default() -> Self {
        SyncSettings {
            interval: Duration::from_secs(30),
            jitter: Duration::from_secs(3),
            max_concurrent: 16,
            unknown_after_failures: 3,
            health_interval: Duration::from_secs(60),
        }
    }
}

/// The watch stream's retained history.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EventSettings {
    /// Events kept for clients that resume a watch from a cursor.
    pub retain: u64,
}

impl Default for EventSettings {
    fn default() -> Self {
        EventSettings { retain: 100_000 }
    }
}

/// `[actions]`: how much action history is kept, and how many accepted
/// actions may wait to be written before new ones are turned away.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ActionSettings {
    /// Ended actions kept in the database, with their steps: the ones that
    /// ended last; older ones are deleted as new ones come in. Unfinished
    /// ones are always kept.
    pub retain: u64,
    /// Accepted actions that may wait for their write at once; beyond that a
    /// request is answered RESOURCE_EXHAUSTED with a retry hint, so a burst
    /// costs bounded memory and every call gets an answer.
    pub max_unwritten: usize,
}

impl Default for ActionSettings {
    fn default() -> Self {
        ActionSettings {
            retain: 100_000,
            max_unwritten: 1024,
        }
    }
}

/// One server of the static inventory.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerEntry {
    pub id: String,
    /// The project (tenant) that owns it.
    pub project: String,
    pub protocol: Protocol,
    pub address: String,
    /// Default: 623 for IPMI, 443 for Redfish.
    #[serde(default)]
    pub port: Option<u16>,
    pub username: String,
    /// File holding the BMC password (relative to the credentials directory).
    pub password_file: String,
    /// Protocol-specific settings, passed to the driver.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates config text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let t = &self.timeouts;
        for (name, d) in [
            ("timeouts.bmc_command", t.bmc_command),
            ("timeouts.soft_reboot", t.soft_reboot),
            ("timeouts.graceful_stop", t.graceful_stop),
            ("timeouts.power_confirm", t.power_confirm),
            ("timeouts.confirm_poll", t.confirm_poll),
            ("sync.interval", self.sync.interval),
        ] {
            if d.is_zero() {
                return Err(format!("{name} must be greater than zero"));
            }
        }
        for (name, d) in [
            ("timeouts.bmc_command", t.bmc_command),
            ("timeouts.soft_reboot", t.soft_reboot),
            ("timeouts.graceful_stop", t.graceful_stop),
            ("timeouts.power_confirm", t.power_confirm),
            ("timeouts.confirm_poll", t.confirm_poll),
            ("timeouts.shutdown_grace", t.shutdown_grace),
            ("sync.interval", self.sync.interval),
            ("sync.jitter", self.sync.jitter),
            ("sync.health_interval", self.sync.health_interval),
        ] {
            if d > MAX_DURATION {
                return Err(format!(
                    "{name} is {}; at most 1 day",
                    humantime::format_duration(d)
                ));
            }
        }
        match (&self.api.tls, self.api.insecure_plaintext) {
            (Some(_), true) => {
                return Err(
                    "api: set either [api.tls] or insecure_plaintext = true, not both".into(),
                )
            }
            (None, false) => {
                return Err("api: the gRPC listener needs [api.tls] (cert_file, key_file, client_ca_file); plaintext only with insecure_plaintext = true on loopback".into())
            }
            (None, true) if !self.listen.ip().is_loopback() => {
                return Err(format!(
                    "api: insecure_plaintext is only allowed on a loopback listen address, not {}",
                    self.listen
                ))
            }
            _ => {}
        }
        if self.sync.max_concurrent == 0 {
            return Err("sync.max_concurrent must be at least 1".into());
        }
        if self.sync.unknown_after_failures == 0 {
            return Err("sync.unknown_after_failures must be at least 1".into());
        }
        if self.events.retain == 0 {
            return Err("events.retain must be at least 1".into());
        }
        if self.actions.retain < 100 {
            return Err("actions.retain must be at least 100".into());
        }
        if self.actions.max_unwritten == 0 {
            return Err("actions.max_unwritten must be at least 1".into());
        }
        let mut seen = HashSet::new();
        for s in &self.servers {
            crate::model::validate_server_id(&s.id).map_err(|e| format!("servers: {e}"))?;
            if !seen.insert(&s.id) {
                return Err(format!("servers: id {:?} appears twice", s.id));
            }
            if s.project.trim().is_empty() {
                return Err(format!("servers.{}: project must not be empty", s.id));
            }
            if s.address.trim().is_empty() {
                return Err(format!("servers.{}: address must not be empty", s.id));
            }
            if s.password_file.trim().is_empty() {
                return Err(format!("servers.{}: password_file must not be empty", s.id));
            }
        }
        if let Some(f) = &self.fake_bmc {
            if !f.enabled {
                return Err("fake_bmc: present but `enabled = false`; remove the section or set enabled = true".into());
            }
        }
        Ok(())
    }

    /// The fake-BMC settings when the fake is on.
    pub fn fake(&self) -> Option<&FakeSettings> {
        self.fake_bmc.as_ref().filter(|f| f.enabled)
    }

    pub fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .or_else(|| std::env::var_os("STATE_DIRECTORY").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/var/lib/rack-agent"))
    }

    /// A path from the config: relative ones live in the credentials directory.
    pub fn credential_path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.credentials_dir().join(p)
        }
    }

    pub fn credentials_dir(&self) -> PathBuf {
        self.credentials_dir
            .clone()
            .or_else(|| std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/etc/rack-agent/credentials"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: &str = "[api]\ninsecure_plaintext = true\n";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(&format!("{text}\n{PLAIN}"), Path::new("test.toml"))
    }

    #[test]
    fn the_listener_needs_tls_or_an_explicit_loopback_plaintext() {
        let err = Config::parse("", Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("[api.tls]"), "{err}");
        let err = Config::parse(
            &format!("listen = \"0.0.0.0:50051\"\n{PLAIN}"),
            Path::new("t.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("loopback"), "{err}");
        let tls =
            "[api.tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\nclient_ca_file = \"ca.pem\"\n";
        let c = Config::parse(tls, Path::new("t.toml")).unwrap();
        assert!(c.api.tls.is_some());
    }

    #[test]
    fn defaults_apply_to_what_is_left_out() {
        let c = parse("").unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(c.timeouts, Timeouts::default());
        assert!(c.fake().is_none());
    }

    #[test]
    fn unknown_field_is_named() {
        let err = parse("[sync]\nintervall = \"5s\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("test.toml"), "{err}");
        assert!(err.contains("intervall"), "{err}");
    }

    #[test]
    fn bad_duration_is_refused() {
        let err = parse("[timeouts]\nsoft_reboot = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("soft_reboot"), "{err}");
    }

    #[test]
    fn zero_interval_is_refused() {
        let err = parse("[sync]\ninterval = \"0s\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sync.interval"), "{err}");
    }

    /// Found by the config fuzz target (fuzz/regressions/config): durations
    /// the daemon adds to the clock or to each other overflowed there.
    #[test]
    fn a_duration_too_long_for_the_daemon_is_refused() {
        for (table, key) in [
            ("sync", "interval"),
            ("sync", "jitter"),
            ("sync", "health_interval"),
            ("timeouts", "shutdown_grace"),
            ("timeouts", "soft_reboot"),
        ] {
            let err = parse(&format!("[{table}]\n{key} = \"18446744073709551615s\"\n"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("{table}.{key}")) && err.contains("at most 1 day"),
                "{err}"
            );
        }
        let c = parse("[sync]\ninterval = \"24h\"\njitter = \"1day\"\n").unwrap();
        assert_eq!(c.sync.interval, MAX_DURATION);
        assert_eq!(c.sync.health_interval, Duration::from_secs(60));
        let c = parse("[sync]\nhealth_interval = \"0s\"\n").unwrap();
        assert!(
            c.sync.health_interval.is_zero(),
            "0 turns the health poll off"
        );
    }

    #[test]
    fn duplicate_server_is_refused() {
        let entry = "[[servers]]\nid = \"a\"\nproject = \"p\"\nprotocol = \"ipmi\"\naddress = \"127.0.0.1\"\nusername = \"u\"\npassword_file = \"a.pass\"\n";
        let err = parse(&format!("{entry}{entry}")).unwrap_err().to_string();
        assert!(err.contains("appears twice"), "{err}");
    }

    #[test]
    fn unknown_protocol_is_refused() {
        let err = parse("[[servers]]\nid = \"a\"\nproject = \"p\"\nprotocol = \"snmp\"\naddress = \"x\"\nusername = \"u\"\npassword_file = \"f\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("snmp"), "{err}");
    }

    #[test]
    fn shipped_configs_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        for name in ["rack-agent.toml", "demo.toml"] {
            Config::load(&root.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
