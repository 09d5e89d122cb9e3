//! Faults from a loopback server of our own: 503 with Retry-After, a hang,
//! malformed JSON, a dropped connection, nobody listening. Each call fails or
//! succeeds as specified, with a clear reason, and nothing panics; a Reset
//! that may have reached the BMC is never sent twice.

mod redfish_support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rack_agent::bmc::redfish::RedfishBmc;
use rack_agent::bmc::{Bmc, BmcError, Endpoint, Power, PowerOp, Protocol, Secret};
use redfish_support::mock::{MockReply, MockRequest, MockServer};

const ROOT: &str = r#"{"@odata.id":"/redfish/v1/","Systems":{"@odata.id":"/redfish/v1/Systems"}}"#;
const SYSTEMS: &str = r#"{"Members":[{"@odata.id":"/redfish/v1/Systems/1"}]}"#;
const SYSTEM: &str = r##"{"Id":"1","PowerState":"On","Actions":{"#ComputerSystem.Reset":{"target":"/redfish/v1/Systems/1/Actions/ComputerSystem.Reset","ResetType@Redfish.AllowableValues":["On","ForceOff","ForceRestart"]}}}"##;
const RESET: &str = "/redfish/v1/Systems/1/Actions/ComputerSystem.Reset";

fn endpoint(port: u16, extra: &[(&str, &str)]) -> Endpoint {
    let mut options: BTreeMap<String, String> = [
        ("scheme", "http"),
        ("request_timeout", "1s"),
        ("retries", "2"),
    ]
    .iter()
    .chain(extra)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    options.retain(|_, v| !v.is_empty());
    Endpoint {
        protocol: Protocol::Redfish,
        address: "127.0.0.1".into(),
        port,
        username: "admin".into(),
        password: Secret::new("fault-pass"),
        options,
    }
}

/// A BMC whose system GETs (after discovery) and Reset POSTs follow scripts.
async fn scripted(
    system_gets: Vec<MockReply>,
    resets: Vec<MockReply>,
) -> (MockServer, Arc<Mutex<(usize, usize)>>) {
    let counts = Arc::new(Mutex::new((0usize, 0usize)));
    let c = counts.clone();
    let server = MockServer::start(move |r: &MockRequest| {
        let mut c = c.lock().unwrap();
        match (r.method.as_str(), r.path.as_str()) {
            ("GET", "/redfish/v1/") => MockReply::json(200, ROOT),
            ("GET", "/redfish/v1/Systems") => MockReply::json(200, SYSTEMS),
            ("GET", "/redfish/v1/Systems/1") => {
                c.0 += 1;
                // The first GET is discovery's.
                match c.0 {
                    1 => MockReply::json(200, SYSTEM),
                    n => system_gets
                        .get(n - 2)
                        .cloned()
                        .unwrap_or_else(|| MockReply::json(200, SYSTEM)),
                }
            }
            ("POST", RESET) => {
                c.1 += 1;
                resets
                    .get(c.1 - 1)
                    .cloned()
                    .unwrap_or_else(|| MockReply::empty(204))
            }
            _ => MockReply::json(404, "{}"),
        }
    })
    .await;
    (server, counts)
}

#[tokio::test]
async fn busy_then_hang_then_garbage_then_fine() {
    let (server, counts) = scripted(
        vec![
            MockReply::json(503, "{}").header("Retry-After", "1"),
            MockReply::hang(),
            MockReply::json(200, r#"{"Id":"1","PowerState":"On""#),
        ],
        vec![],
    )
    .await;
    let bmc = RedfishBmc::connect("f1", &endpoint(server.port(), &[])).unwrap();
    bmc.capabilities().await.unwrap();

    // 503 + Retry-After: 1 → waited about a second, then the retry hung → Timeout.
    let t = Instant::now();
    let e = bmc.power_state().await.unwrap_err();
    assert_eq!(e, BmcError::Timeout(Duration::from_secs(1)), "{e}");
    assert!(
        t.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        t.elapsed()
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(e.is_unavailable());

    // Malformed JSON → Protocol, naming what could not be read.
    let e = bmc.power_state().await.unwrap_err();
    assert!(matches!(e, BmcError::Protocol(_)), "{e:?}");
    assert!(e.to_string().contains("/redfish/v1/Systems/1"), "{e}");

    // And the BMC recovers.
    assert_eq!(bmc.power_state().await.unwrap(), Power::On);
    assert_eq!(counts.lock().unwrap().0, 5);
}

#[tokio::test]
async fn retry_after_then_success() {
    let (server, counts) = scripted(
        vec![
            MockReply::json(503, "{}").header("Retry-After", "1"),
            MockReply::json(503, "{}").header("Retry-After", "0"),
        ],
        vec![],
    )
    .await;
    let bmc = RedfishBmc::connect("f1", &endpoint(server.port(), &[])).unwrap();
    bmc.capabilities().await.unwrap();
    let t = Instant::now();
    assert_eq!(bmc.power_state().await.unwrap(), Power::On);
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(counts.lock().unwrap().0, 4);
}

#[tokio::test]
async fn persistent_503_gives_up_after_the_retries() {
    let busy = MockReply::json(
        503,
        r#"{"error":{"code":"Base.1.8.ServiceTemporarilyUnavailable","message":"busy","@Message.ExtendedInfo":[{"Message":"The service is temporarily unavailable.  Retry in 0 seconds."}]}}"#,
    )
    .header("Retry-After", "0");
    let (server, counts) = scripted(vec![busy.clone(), busy.clone(), busy], vec![]).await;
    let bmc = RedfishBmc::connect("f1", &endpoint(server.port(), &[])).unwrap();
    bmc.capabilities().await.unwrap();
    let e = bmc.power_state().await.unwrap_err();
    assert!(matches!(e, BmcError::Refused(_)), "{e:?}");
    assert!(e.to_string().contains("HTTP 503"), "{e}");
    assert!(e.to_string().contains("temporarily unavailable"), "{e}");
    assert_eq!(counts.lock().unwrap().0, 1 + 3, "one try + 2 retries");
}

#[tokio::test]
async fn a_reset_that_may_have_arrived_is_never_resent() {
    // The BMC takes the Reset and never answers.
    let (server, counts) = scripted(vec![], vec![MockReply::hang()]).await;
    let bmc = RedfishBmc::connect("f1", &endpoint(server.port(), &[])).unwrap();
    let e = bmc.power(PowerOp::HardReset).await.unwrap_err();
    assert!(e.is_unavailable(), "{e:?}");
    assert!(
        e.to_string()
            .contains("no answer to POST /redfish/v1/Systems/1/Actions/ComputerSystem.Reset")
            && e.to_string()
                .contains("not re-sent because the BMC may have executed it"),
        "{e}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(counts.lock().unwrap().1, 1, "Reset sent once");

    // A 503 means it was not processed: that one is retried, and then accepted.
    let (server, counts) = scripted(
        vec![],
        vec![MockReply::json(503, "{}").header("Retry-After", "0")],
    )
    .await;
    let bmc = RedfishBmc::connect("f1", &endpoint(server.port(), &[])).unwrap();
    bmc.power(PowerOp::ForceOff).await.unwrap();
    assert_eq!(counts.lock().unwrap().1, 2);
}

#[tokio::test]
async fn nobody_listening_is_unreachable_quickly() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let bmc = RedfishBmc::connect("f1", &endpoint(port, &[])).unwrap();
    let t = Instant::now();
    let e = bmc.power_state().await.unwrap_err();
    assert!(matches!(e, BmcError::Unreachable(_)), "{e:?}");
    assert!(e.to_string().contains("cannot connect"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[tokio::test]
async fn bad_options_fail_at_connect() {
    for (k, v) in [
        ("colour", "blue"),
        ("auth", "kerberos"),
        ("request_timeout", "soon"),
        ("cert_sha256", "12:34"),
    ] {
        let e = RedfishBmc::connect("f1", &endpoint(1, &[(k, v)])).unwrap_err();
        assert!(e.to_string().contains(k), "{k}: {e}");
    }
    let mut ep = endpoint(1, &[("scheme", "")]);
    ep.options
        .insert("ca_file".into(), "/nonexistent/ca.pem".into());
    let e = RedfishBmc::connect("f1", &ep).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
}
