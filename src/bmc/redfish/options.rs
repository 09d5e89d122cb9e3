//! The per-BMC settings a Redfish endpoint takes in `Endpoint.options`,
//! validated at connect: an option this driver does not know is an error there,
//! not a silent no-op.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::bmc::BmcError;

/// Every option the driver understands, with its default.
pub const KNOWN: &[&str] = &[
    "system_id",
    "auth",
    "ca_file",
    "cert_sha256",
    "insecure_skip_verify",
    "scheme",
    "request_timeout",
    "task_timeout",
    "retries",
    "max_connections",
];

/// How to authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthChoice {
    /// Session when the service root advertises a SessionService, else basic.
    Auto,
    /// Redfish session (`X-Auth-Token`), created at first use, deleted at close.
    Session,
    /// HTTP basic on every request.
    Basic,
}

/// How to check the BMC's TLS certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsTrust {
    /// Public web PKI roots (webpki-roots).
    WebPki,
    /// Only the certificates in this PEM bundle.
    CaFile(PathBuf),
    /// Exactly the end-entity certificate with this SHA-256 (of its DER).
    Pinned([u8; 32]),
    /// No verification (explicit `insecure_skip_verify = "true"` only).
    Insecure,
}

#[derive(Debug, Clone)]
pub struct RedfishOptions {
    /// `system_id`: the system to control when the BMC exposes several.
    pub system_id: Option<String>,
    /// `auth`: `session` | `basic` (default: session if advertised, else basic).
    pub auth: AuthChoice,
    /// `ca_file` / `cert_sha256` / `insecure_skip_verify` (at most one).
    pub trust: TlsTrust,
    /// `scheme`: `https` (default) or `http` (emulators and test servers only).
    pub https: bool,
    /// `request_timeout`: per HTTP request (default 10 s).
    pub request_timeout: Duration,
    /// `task_timeout`: how long to follow the 202 task of a forced reset,
    /// a boot override or virtual media (default 10 s); a task still running
    /// then is reported as such, not re-sent. Keep it below the daemon's
    /// `timeouts.bmc_command` (15 s by default), which otherwise cuts the wait
    /// first with a bare "did not answer". Graceful requests are not followed:
    /// the engine waits for their effect with its own budgets.
    pub task_timeout: Duration,
    /// `retries`: retries after connection errors and 503 (default 3).
    pub retries: u32,
    /// `max_connections`: requests in flight and idle connections kept per BMC (default 4).
    pub max_connections: usize,
}

impl Default for RedfishOptions {
    fn default() -> Self {
        RedfishOptions {
            system_id: None,
            auth: AuthChoice::Auto,
            trust: TlsTrust::WebPki,
            https: true,
            request_timeout: Duration::from_secs(10),
            task_timeout: Duration::from_secs(10),
            retries: 3,
            max_connections: 4,
        }
    }
}

fn bad(key: &str, why: impl std::fmt::Display) -> BmcError {
    BmcError::Unsupported(format!("Redfish option `{key}`: {why}"))
}

fn duration(key: &str, v: &str) -> Result<Duration, BmcError> {
    let d = humantime::parse_duration(v).map_err(|e| bad(key, format!("{v:?}: {e}")))?;
    if d.is_zero() {
        return Err(bad(key, "must be more than zero"));
    }
    Ok(d)
}

/// Parses a SHA-256 fingerprint: 64 hex digits, colons allowed (`openssl x509
/// -fingerprint -sha256` prints `AB:CD:...`).
pub fn parse_fingerprint(v: &str) -> Option<[u8; 32]> {
    let hex: String = v.chars().filter(|c| *c != ':').collect();
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl RedfishOptions {
    pub fn parse(options: &BTreeMap<String, String>) -> Result<Self, BmcError> {
        let unknown: Vec<&str> = options
            .keys()
            .map(String::as_str)
            .filter(|k| !KNOWN.contains(k))
            .collect();
        if !unknown.is_empty() {
            return Err(BmcError::Unsupported(format!(
                "Redfish option(s) {} (known: {})",
                unknown.join(", "),
                KNOWN.join(", ")
            )));
        }
        let mut o = RedfishOptions::default();
        let get = |k: &str| options.get(k).map(|v| v.trim());
        if let Some(v) = get("system_id") {
            if v.is_empty() {
                return Err(bad("system_id", "is empty"));
            }
            o.system_id = Some(v.to_string());
        }
        if let Some(v) = get("auth") {
            o.auth = match v {
                "session" => AuthChoice::Session,
                "basic" => AuthChoice::Basic,
                other => return Err(bad("auth", format!("{other:?} is not session or basic"))),
            };
        }
        let insecure = match get("insecure_skip_verify") {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(bad(
                    "insecure_skip_verify",
                    format!("{other:?} is not true or false"),
                ))
            }
        };
        let mut trusts = Vec::new();
        if let Some(v) = get("ca_file") {
            trusts.push(TlsTrust::CaFile(PathBuf::from(v)));
        }
        if let Some(v) = get("cert_sha256") {
            let fp = parse_fingerprint(v)
                .ok_or_else(|| bad("cert_sha256", "is not 64 hex digits (colons allowed)"))?;
            trusts.push(TlsTrust::Pinned(fp));
        }
        if insecure {
            trusts.push(TlsTrust::Insecure);
        }
        if trusts.len() > 1 {
            return Err(BmcError::Unsupported(
                "Redfish options ca_file, cert_sha256 and insecure_skip_verify together: choose one"
                    .into(),
            ));
        }
        if let Some(t) = trusts.pop() {
            o.trust = t;
        }
        if let Some(v) = get("scheme") {
            o.https = match v {
                "https" => true,
                "http" => false,
                other => return Err(bad("scheme", format!("{other:?} is not https or http"))),
            };
        }
        if !o.https && o.trust != TlsTrust::WebPki {
            return Err(bad("scheme", "TLS options make no sense with plain http"));
        }
        if let Some(v) = get("request_timeout") {
            o.request_timeout = duration("request_timeout", v)?;
        }
        if let Some(v) = get("task_timeout") {
            o.task_timeout = duration("task_timeout", v)?;
        }
        if let Some(v) = get("retries") {
            o.retries = v
                .parse()
                .ok()
                .filter(|n| *n <= 10)
                .ok_or_else(|| bad("retries", format!("{v:?} is not a number from 0 to 10")))?;
        }
        if let Some(v) = get("max_connections") {
            o.max_connections =
                v.parse()
                    .ok()
                    .filter(|n| (1..=32).contains(n))
                    .ok_or_else(|| {
                        bad(
                            "max_connections",
                            format!("{v:?} is not a number from 1 to 32"),
                        )
                    })?;
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults() {
        let o = RedfishOptions::parse(&opts(&[])).unwrap();
        assert_eq!(o.auth, AuthChoice::Auto);
        assert_eq!(o.trust, TlsTrust::WebPki);
        assert_eq!(o.request_timeout, Duration::from_secs(10));
    }

    #[test]
    fn unknown_option_is_named() {
        let e = RedfishOptions::parse(&opts(&[("sytem_id", "1")])).unwrap_err();
        assert!(e.to_string().contains("sytem_id"), "{e}");
    }

    #[test]
    fn trust_options_are_exclusive() {
        let e = RedfishOptions::parse(&opts(&[
            ("ca_file", "/x.pem"),
            ("insecure_skip_verify", "true"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("choose one"), "{e}");
    }

    #[test]
    fn fingerprint_with_colons() {
        let fp = "AB:".repeat(31) + "CD";
        let o = RedfishOptions::parse(&opts(&[("cert_sha256", &fp)])).unwrap();
        let mut want = [0xABu8; 32];
        want[31] = 0xCD;
        assert_eq!(o.trust, TlsTrust::Pinned(want));
        assert!(RedfishOptions::parse(&opts(&[("cert_sha256", "abcd")])).is_err());
    }

    #[test]
    fn durations_and_numbers() {
        let o = RedfishOptions::parse(&opts(&[
            ("request_timeout", "2s"),
            ("task_timeout", "1m"),
            ("retries", "0"),
            ("auth", "basic"),
        ]))
        .unwrap();
        assert_eq!(o.request_timeout, Duration::from_secs(2));
        assert_eq!(o.task_timeout, Duration::from_secs(60));
        assert_eq!(o.retries, 0);
        assert_eq!(o.auth, AuthChoice::Basic);
        assert!(RedfishOptions::parse(&opts(&[("auth", "token")])).is_err());
    }
}
