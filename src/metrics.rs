//! Prometheus metrics: what an operator graphs and alerts on.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabels {
    pub protocol: String,
    pub kind: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub protocol: String,
    pub kind: String,
}

/// One series per enrolled server at most; forgotten when it is removed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabels {
    pub server_id: String,
}

type ServerGauge = Family<ServerLabels, Gauge<f64, AtomicU64>>;

type HistogramFamily = Family<KindLabels, Histogram, fn() -> Histogram>;

fn action_buckets() -> Histogram {
    // 50 ms .. ~7 min: a status read up to a soft reboot that falls back.
    Histogram::new(exponential_buckets(0.05, 2.0, 14))
}

pub struct Metrics {
    registry: Registry,
    /// Actions ended, by protocol, kind and outcome.
    pub actions: Family<ActionLabels, Counter>,
    /// Time from acceptance to end, by protocol and kind.
    pub action_seconds: HistogramFamily,
    /// BMC errors, by protocol and error kind (timeout, auth, refused...).
    pub bmc_errors: Family<KindLabels, Counter>,
    /// One power-state poll of one BMC.
    pub poll_seconds: Histogram,
    /// BMCs whose last poll failed.
    pub unreachable_bmcs: Gauge,
    /// Actions running now.
    pub in_flight_actions: Gauge,
    /// Power draw per server (watts), from its last health read.
    pub server_power_watts: ServerGauge,
    /// Inlet temperature per server (degrees C), from its last health read.
    pub server_inlet_celsius: ServerGauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("rack_agent");
        let actions = Family::<ActionLabels, Counter>::default();
        let action_seconds = HistogramFamily::new_with_constructor(action_buckets);
        let bmc_errors = Family::<KindLabels, Counter>::default();
        let poll_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        let unreachable_bmcs = Gauge::default();
        let in_flight_actions = Gauge::default();
        registry.register(
            "actions",
            "Actions ended, by protocol, kind and outcome",
            actions.clone(),
        );
        registry.register(
            "action_duration_seconds",
            "Time from acceptance to the end of an action",
            action_seconds.clone(),
        );
        registry.register(
            "bmc_errors",
            "BMC errors by protocol and kind",
            bmc_errors.clone(),
        );
        registry.register(
            "poll_duration_seconds",
            "One power-state poll of one BMC",
            poll_seconds.clone(),
        );
        registry.register(
            "unreachable_bmcs",
            "BMCs whose last power-state read failed",
            unreachable_bmcs.clone(),
        );
        registry.register(
            "in_flight_actions",
            "Actions running now",
            in_flight_actions.clone(),
        );
        let server_power_watts = ServerGauge::default();
        let server_inlet_celsius = ServerGauge::default();
        registry.register(
            "server_power_watts",
            "Power draw of a server as its BMC read it at the last health read, in watts",
            server_power_watts.clone(),
        );
        registry.register(
            "server_inlet_celsius",
            "Inlet temperature of a server as its BMC read it at the last health read, in degrees C",
            server_inlet_celsius.clone(),
        );
        Arc::new(Metrics {
            registry,
            actions,
            action_seconds,
            bmc_errors,
            poll_seconds,
            unreachable_bmcs,
            in_flight_actions,
            server_power_watts,
            server_inlet_celsius,
        })
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// A server's gauges from a health read: a value the BMC did not give
    /// has no series.
    pub fn set_server_health(&self, server_id: &str, watts: Option<f64>, celsius: Option<f64>) {
        let labels = ServerLabels {
            server_id: server_id.to_string(),
        };
        for (family, value) in [
            (&self.server_power_watts, watts),
            (&self.server_inlet_celsius, celsius),
        ] {
            match value {
                Some(v) => {
                    family.get_or_create(&labels).set(v);
                }
                None => {
                    family.remove(&labels);
                }
            }
        }
    }

    /// Drops a server's series (removed, or its reading failed).
    pub fn forget_server(&self, server_id: &str) {
        let labels = ServerLabels {
            server_id: server_id.to_string(),
        };
        self.server_power_watts.remove(&labels);
        self.server_inlet_celsius.remove(&labels);
    }

    pub fn bmc_error(&self, protocol: &str, kind: &str) {
        self.bmc_errors
            .get_or_create(&KindLabels {
                protocol: protocol.into(),
                kind: kind.into(),
            })
            .inc();
    }
}

/// Serves `GET /metrics` on `listener` until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    render: Arc<dyn Fn() -> String + Send + Sync>,
) {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper::{Method, Request, Response, StatusCode};
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let render = render.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let render = render.clone();
                async move {
                    let resp = if req.method() == Method::GET && req.uri().path() == "/metrics" {
                        Response::builder()
                            .header(
                                "content-type",
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )
                            .body(Full::new(Bytes::from(render())))
                    } else {
                        Response::builder()
                            .status(StatusCode::NOT_FOUND)
                            .body(Full::new(Bytes::from("only /metrics lives here\n")))
                    };
                    resp.map_err(|e| std::io::Error::other(e.to_string()))
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_family() {
        let m = Metrics::new();
        m.actions
            .get_or_create(&ActionLabels {
                protocol: "ipmi".into(),
                kind: "reboot_hard".into(),
                outcome: "succeeded".into(),
            })
            .inc();
        m.bmc_error("redfish", "timeout");
        m.set_server_health("s1", Some(212.5), None);
        let text = m.encode();
        assert!(
            text.contains("rack_agent_server_power_watts{server_id=\"s1\"} 212.5"),
            "{text}"
        );
        assert!(!text.contains("rack_agent_server_inlet_celsius{"), "{text}");
        for name in [
            "rack_agent_actions_total",
            "rack_agent_bmc_errors_total",
            "rack_agent_poll_duration_seconds",
            "rack_agent_unreachable_bmcs",
            "rack_agent_in_flight_actions",
        ] {
            assert!(text.contains(name), "{name} missing:\n{text}");
        }
    }

    #[test]
    fn a_server_has_one_series_at_most_and_none_once_forgotten() {
        let m = Metrics::new();
        m.set_server_health("s1", Some(100.0), Some(21.0));
        m.set_server_health("s1", Some(120.0), Some(22.0));
        m.set_server_health("s2", Some(90.0), Some(20.0));
        let text = m.encode();
        assert_eq!(
            text.matches("rack_agent_server_power_watts{").count(),
            2,
            "{text}"
        );
        assert!(
            text.contains("rack_agent_server_power_watts{server_id=\"s1\"} 120.0"),
            "{text}"
        );
        m.forget_server("s1");
        m.set_server_health("s2", None, Some(20.0));
        let text = m.encode();
        assert!(!text.contains("server_id=\"s1\""), "{text}");
        assert!(!text.contains("rack_agent_server_power_watts{"), "{text}");
        assert!(
            text.contains("rack_agent_server_inlet_celsius{server_id=\"s2\"} 20.0"),
            "{text}"
        );
    }
}
