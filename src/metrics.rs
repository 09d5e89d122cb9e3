//! Prometheus metrics: what an operator graphs and alerts on.

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
        Arc::new(Metrics {
            registry,
            actions,
            action_seconds,
            bmc_errors,
            poll_seconds,
            unreachable_bmcs,
            in_flight_actions,
        })
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
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
        let text = m.encode();
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
}
