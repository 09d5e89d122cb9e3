//! IPMI settings from `Endpoint.options`, validated when the driver is built.
//! Unknown keys are refused so that a typo does not silently fall back to a
//! default.

use std::collections::BTreeMap;
use std::time::Duration;

use super::lan::rakp::CipherSuite;
use crate::bmc::BmcError;

/// The keys an IPMI endpoint accepts.
pub const KEYS: &[&str] = &[
    "cipher_suite",
    "timeout",
    "retries",
    "keepalive",
    "boot_mode",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `cipher_suite`: 3 (default, RAKP-HMAC-SHA1 / HMAC-SHA1-96 / AES-CBC-128),
    /// 2 (no encryption) or 1 (no integrity either). 0 has no authentication and
    /// is refused; 17 (SHA-256) is not implemented (the bench's ipmi_sim lacks it).
    pub cipher_suite: CipherSuite,
    /// `timeout`: wait per attempt, e.g. "1s" (default 1 s, 50 ms..=30 s).
    pub timeout: Duration,
    /// `retries`: re-sends after the first attempt for idempotent commands
    /// (default 2, at most 10). A non-idempotent chassis control is sent once
    /// and waited on for the whole budget instead.
    pub retries: u32,
    /// `keepalive`: an idle session is refreshed this often (default 10 s, well
    /// inside the ~30–60 s BMC session timeouts; "0s" disables).
    pub keepalive: Duration,
    /// `boot_mode`: "legacy" (default) or "efi", for boot overrides.
    pub efi: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            cipher_suite: CipherSuite::by_id(3).expect("suite 3 exists"),
            timeout: Duration::from_secs(1),
            retries: 2,
            keepalive: Duration::from_secs(10),
            efi: false,
        }
    }
}

impl Options {
    /// The whole time budget of one command: every attempt's wait.
    pub fn budget(&self) -> Duration {
        self.timeout * (self.retries + 1)
    }

    pub fn parse(map: &BTreeMap<String, String>) -> Result<Options, BmcError> {
        let bad = |key: &str, value: &str, why: &str| {
            BmcError::Unsupported(format!("IPMI option {key} = {value:?}: {why}"))
        };
        let mut o = Options::default();
        for (key, value) in map {
            match key.as_str() {
                "cipher_suite" => {
                    let id: u8 = value
                        .trim()
                        .parse()
                        .map_err(|_| bad(key, value, "not a number; use 1, 2 or 3"))?;
                    o.cipher_suite = CipherSuite::by_id(id).ok_or_else(|| {
                        bad(
                            key,
                            value,
                            "this driver implements cipher suites 1, 2 and 3 \
                             (0 has no authentication, 17 is not implemented)",
                        )
                    })?;
                }
                "timeout" => {
                    let d = humantime::parse_duration(value)
                        .map_err(|e| bad(key, value, &e.to_string()))?;
                    if d < Duration::from_millis(50) || d > Duration::from_secs(30) {
                        return Err(bad(key, value, "must be between 50ms and 30s"));
                    }
                    o.timeout = d;
                }
                "retries" => {
                    let n: u32 = value
                        .trim()
                        .parse()
                        .map_err(|_| bad(key, value, "not a number"))?;
                    if n > 10 {
                        return Err(bad(key, value, "at most 10"));
                    }
                    o.retries = n;
                }
                "keepalive" => {
                    o.keepalive = humantime::parse_duration(value)
                        .map_err(|e| bad(key, value, &e.to_string()))?;
                }
                "boot_mode" => {
                    o.efi = match value.as_str() {
                        "legacy" => false,
                        "efi" => true,
                        _ => return Err(bad(key, value, "use \"legacy\" or \"efi\"")),
                    };
                }
                _ => {
                    return Err(BmcError::Unsupported(format!(
                        "IPMI option {key:?} (known: {})",
                        KEYS.join(", ")
                    )))
                }
            }
        }
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<Options, BmcError> {
        Options::parse(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn defaults() {
        let o = parse(&[]).unwrap();
        assert_eq!(o.cipher_suite.id, 3);
        assert_eq!(o.budget(), Duration::from_secs(3));
    }

    #[test]
    fn valid_values() {
        let o = parse(&[
            ("cipher_suite", "2"),
            ("timeout", "250ms"),
            ("retries", "4"),
            ("keepalive", "0s"),
            ("boot_mode", "efi"),
        ])
        .unwrap();
        assert_eq!(o.cipher_suite.id, 2);
        assert_eq!(o.timeout, Duration::from_millis(250));
        assert_eq!(o.retries, 4);
        assert!(o.efi);
        assert_eq!(o.keepalive, Duration::ZERO);
    }

    #[test]
    fn invalid_values_are_refused_with_the_reason() {
        for (k, v) in [
            ("cipher_suite", "17"),
            ("cipher_suite", "0"),
            ("cipher_suite", "three"),
            ("timeout", "1ms"),
            ("timeout", "soon"),
            ("retries", "100"),
            ("boot_mode", "uefi"),
            ("cipher", "3"),
        ] {
            let e = parse(&[(k, v)]).unwrap_err();
            assert!(matches!(e, BmcError::Unsupported(_)), "{k}={v}: {e}");
            assert!(e.to_string().contains(k), "{e}");
        }
    }
}
