//! Round trip of one Get Chassis Status over a reused RMCP+ session (cipher
//! suite 3), measured with the agent's session layer against any IPMI v2.0
//! BMC — the simulator or ipmi_sim — so the two can be compared:
//!
//! ```sh
//! cargo run -p bmc-sim --example rtt -- 127.0.0.1:30000 2000 [user] [password]
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rack_agent::bmc::ipmi::commands::GetChassisStatus;
use rack_agent::bmc::ipmi::lan::rakp::CipherSuite;
use rack_agent::bmc::ipmi::lan::{Retry, Session};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let peer: SocketAddr = args
        .first()
        .expect("usage: rtt HOST:PORT [N] [user] [password]")
        .parse()
        .expect("HOST:PORT");
    let n: usize = args.get(1).map_or(2000, |s| s.parse().expect("N"));
    let user = args.get(2).map_or("admin", String::as_str);
    let password = args.get(3).map_or("password", String::as_str);
    let retry = Retry {
        attempts: 1,
        per_attempt: Duration::from_secs(2),
    };
    let t = Instant::now();
    let mut s = Session::open(
        peer,
        user,
        password.as_bytes(),
        CipherSuite::by_id(3).unwrap(),
        retry,
    )
    .await
    .expect("open a session");
    let open = t.elapsed();
    // Warm up, then measure.
    for _ in 0..50 {
        s.run(GetChassisStatus, retry).await.expect("status");
    }
    let mut lat = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        s.run(GetChassisStatus, retry).await.expect("status");
        lat.push(t.elapsed());
    }
    s.close(retry).await.expect("close");
    lat.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let p = |q: f64| us(lat[((lat.len() - 1) as f64 * q) as usize]);
    println!(
        "{peer}: session open {:.0} us; Get Chassis Status x{n}: p50 {:.0} us, p90 {:.0} us, p99 {:.0} us, max {:.0} us",
        us(open),
        p(0.5),
        p(0.9),
        p(0.99),
        us(*lat.last().unwrap())
    );
}
