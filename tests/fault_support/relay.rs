//! Loss-and-delay relays of our own, in userspace: this kernel has no `netem`
//! qdisc (see /work/shared/PEERS.md), so packet loss, delay, jitter,
//! duplication and reordering between the daemon and a BMC come from here.
//!
//! - [`UdpRelay`] sits between the daemon and an IPMI BMC. Every datagram, in
//!   each direction, meets a fate drawn from a seeded RNG: lost, delayed
//!   (delay + uniform jitter), duplicated, or held back so that later ones
//!   overtake it. A [`Filter`] sees each datagram first and may drop it or act
//!   on it (kill the BMC when a given command passes); [`ipmi_kind`] reads
//!   just enough of RMCP+/IPMI to name the command when the session does not
//!   encrypt (cipher suites 1 and 2).
//! - [`TcpRelay`] sits between the daemon and a Redfish BMC, byte-transparent
//!   (TLS runs end to end through it). A userspace relay cannot lose a TCP
//!   segment without breaking the stream, so loss is what it costs an
//!   application: a chunk that is "lost" arrives one retransmission timeout
//!   later (200 ms, doubling while losses follow each other, as Linux's RTO).
//!   Chunks keep their order; a connection may also be cut (RST) mid-stream.
//!
//! Replays: the decisions of each direction come, in arrival order, from an
//! RNG seeded from one seed. The same seed replays the same sequence of fates;
//! the daemon's own timers (keep-alives, sync polls) may still interleave
//! differently from one run to the next, which the tests must tolerate.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Which way a datagram travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// From the daemon to the BMC (requests).
    ToBmc,
    /// From the BMC to the daemon (answers).
    ToDaemon,
}

/// What the network does to traffic, the same both ways.
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    /// Probability that a datagram is lost (UDP), or that a chunk needs a
    /// retransmission (TCP).
    pub loss: f64,
    /// One-way delay of everything.
    pub delay: Duration,
    /// Plus a uniform extra in `0..jitter`.
    pub jitter: Duration,
    /// Probability that a datagram is delivered twice (the copy a little later).
    pub duplicate: f64,
    /// Probability that a datagram is held back `hold` longer, so that the
    /// ones behind it overtake it.
    pub reorder: f64,
    pub hold: Duration,
    /// TCP only: probability, per chunk, that the connection is cut (RST both ways).
    pub cut: f64,
}

impl Faults {
    /// A perfect network.
    pub fn none() -> Faults {
        Faults {
            loss: 0.0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            duplicate: 0.0,
            reorder: 0.0,
            hold: Duration::ZERO,
            cut: 0.0,
        }
    }

    /// The lossy link: 30 % loss, 200 ms delay with ±50 ms of jitter
    /// (150..250 ms).
    pub fn lossy() -> Faults {
        Faults {
            loss: 0.30,
            delay: Duration::from_millis(150),
            jitter: Duration::from_millis(100),
            ..Faults::none()
        }
    }
}

/// The fate of one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Dropped by a filter (not random).
    Filtered,
    Lost,
    /// Delivered after this delay (and a copy after the second, if any).
    Delivered(Duration, Option<Duration>),
}

/// Decides what happens to a datagram before the random fate; `false` drops
/// it. Runs on the relay's task: keep it short (killing a process is fine).
pub type Filter = Arc<dyn Fn(Dir, &[u8]) -> bool + Send + Sync>;

/// A filter that lets everything through.
pub fn pass_all() -> Filter {
    Arc::new(|_, _| true)
}

/// What a relay saw, for assertions and for the failure report.
#[derive(Debug, Default)]
pub struct Stats {
    pub to_bmc: Counts,
    pub to_daemon: Counts,
    /// UDP: one line per datagram ("→ Chassis Control lost"), the last 400.
    log: Mutex<Vec<String>>,
}

#[derive(Debug, Default)]
pub struct Counts {
    pub seen: AtomicUsize,
    pub filtered: AtomicUsize,
    pub lost: AtomicUsize,
    pub duplicated: AtomicUsize,
    pub held: AtomicUsize,
    /// TCP: connections cut.
    pub cut: AtomicUsize,
}

impl Counts {
    pub fn get(&self, c: &AtomicUsize) -> usize {
        c.load(Ordering::SeqCst)
    }
}

impl Stats {
    fn counts(&self, dir: Dir) -> &Counts {
        match dir {
            Dir::ToBmc => &self.to_bmc,
            Dir::ToDaemon => &self.to_daemon,
        }
    }

    fn note(&self, line: String) {
        let mut log = self.log.lock().unwrap();
        if log.len() >= 400 {
            log.remove(0);
        }
        log.push(line);
    }

    /// The relay's recent history, one datagram a line.
    pub fn history(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn summary(&self) -> String {
        let one = |name: &str, c: &Counts| {
            format!(
                "{name}: {} seen, {} filtered, {} lost, {} duplicated, {} held back, {} cuts",
                c.get(&c.seen),
                c.get(&c.filtered),
                c.get(&c.lost),
                c.get(&c.duplicated),
                c.get(&c.held),
                c.get(&c.cut)
            )
        };
        format!(
            "{}; {}",
            one("to the BMC", &self.to_bmc),
            one("to the daemon", &self.to_daemon)
        )
    }
}

/// One direction's dice.
struct Dice {
    rng: Mutex<StdRng>,
    faults: Faults,
    /// Consecutive TCP losses, for the doubling retransmission timeout.
    streak: Mutex<u32>,
}

impl Dice {
    fn new(seed: u64, dir: Dir, faults: Faults) -> Dice {
        let salt = match dir {
            Dir::ToBmc => 0x5EED_0001,
            Dir::ToDaemon => 0x5EED_0002,
        };
        Dice {
            rng: Mutex::new(StdRng::seed_from_u64(seed ^ salt)),
            faults,
            streak: Mutex::new(0),
        }
    }

    fn jittered(&self, rng: &mut StdRng) -> Duration {
        let f = &self.faults;
        let extra = if f.jitter.is_zero() {
            Duration::ZERO
        } else {
            f.jitter.mul_f64(rng.random::<f64>())
        };
        f.delay + extra
    }

    /// A datagram's fate. Every draw is made whatever the outcome, so one
    /// datagram always consumes the same amount of randomness.
    fn datagram(&self) -> Fate {
        let mut rng = self.rng.lock().unwrap();
        let f = &self.faults;
        let lost = rng.random::<f64>() < f.loss;
        let delay = self.jittered(&mut rng);
        let dup = rng.random::<f64>() < f.duplicate;
        let dup_delay = self.jittered(&mut rng);
        let held = rng.random::<f64>() < f.reorder;
        if lost {
            return Fate::Lost;
        }
        let delay = if held { delay + f.hold } else { delay };
        Fate::Delivered(delay, dup.then_some(dup_delay))
    }

    /// A TCP chunk: its delay (with a retransmission penalty when "lost"),
    /// and whether the connection is cut instead.
    fn chunk(&self) -> (Duration, bool, bool) {
        let mut rng = self.rng.lock().unwrap();
        let f = &self.faults;
        let lost = rng.random::<f64>() < f.loss;
        let delay = self.jittered(&mut rng);
        let cut = rng.random::<f64>() < f.cut;
        let mut streak = self.streak.lock().unwrap();
        let penalty = if lost {
            *streak += 1;
            // Linux: RTO at least 200 ms, doubled per retransmission.
            Duration::from_millis(200) * (1 << (*streak - 1).min(4))
        } else {
            *streak = 0;
            Duration::ZERO
        };
        (delay + penalty, lost, cut)
    }
}

// ---------------------------------------------------------------------------
// UDP (IPMI)

/// What [`ipmi_kind`] reads out of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpmiKind {
    /// Session set-up: Open Session, RAKP 1-4 (payload type).
    Setup(u8),
    /// An IPMI message in a session that does not encrypt.
    Message {
        netfn: u8,
        cmd: u8,
        /// Responses only.
        completion: Option<u8>,
    },
    /// An encrypted IPMI message: the command cannot be read.
    Encrypted,
}

impl IpmiKind {
    pub fn is(&self, netfn_request: u8, cmd: u8) -> bool {
        matches!(self, IpmiKind::Message { netfn, cmd: c, .. }
            if netfn & !1 == netfn_request && *c == cmd)
    }

    pub fn name(&self) -> String {
        match self {
            IpmiKind::Setup(0x10) => "Open Session Request".into(),
            IpmiKind::Setup(0x11) => "Open Session Response".into(),
            IpmiKind::Setup(p @ 0x12..=0x15) => format!("RAKP {}", p - 0x11),
            IpmiKind::Setup(p) => format!("payload {p:#04x}"),
            IpmiKind::Encrypted => "encrypted message".into(),
            IpmiKind::Message {
                netfn,
                cmd,
                completion,
            } => {
                let name = match (netfn & !1, cmd) {
                    (0x00, 0x01) => "Get Chassis Status".to_string(),
                    (0x00, 0x02) => "Chassis Control".to_string(),
                    (0x00, 0x07) => "Get System Restart Cause".to_string(),
                    (0x00, 0x08) => "Set System Boot Options".to_string(),
                    (0x00, 0x09) => "Get System Boot Options".to_string(),
                    (0x06, 0x3B) => "Set Session Privilege Level".to_string(),
                    (0x06, 0x3C) => "Close Session".to_string(),
                    (n, c) => format!("NetFn {n:#04x} cmd {c:#04x}"),
                };
                match completion {
                    Some(cc) => format!("{name} answer (cc {cc:#04x})"),
                    None => name,
                }
            }
        }
    }
}

/// Names an RMCP+ datagram: session set-up, or (in the clear) the IPMI
/// command — NetFn at byte 17, command at byte 21, a response's completion
/// code at byte 22. `None` for anything that is not RMCP+.
pub fn ipmi_kind(d: &[u8]) -> Option<IpmiKind> {
    if d.len() < 16 || d[..4] != [0x06, 0x00, 0xFF, 0x07] || d[4] != 0x06 {
        return None;
    }
    let payload = d[5] & 0x3f;
    if payload != 0 {
        return Some(IpmiKind::Setup(payload));
    }
    if d[5] & 0x80 != 0 {
        return Some(IpmiKind::Encrypted);
    }
    if d.len() < 16 + 7 {
        return None;
    }
    let netfn = d[17] >> 2;
    Some(IpmiKind::Message {
        netfn,
        cmd: d[21],
        completion: (netfn & 1 == 1).then_some(d[22]),
    })
}

/// The Chassis Control action byte of a request in the clear (0 down, 1 up,
/// 2 cycle, 3 hard reset, 5 soft-off).
pub fn chassis_control_action(d: &[u8]) -> Option<u8> {
    match ipmi_kind(d)? {
        IpmiKind::Message {
            netfn: 0x00,
            cmd: 0x02,
            completion: None,
        } => d.get(22).copied(),
        _ => None,
    }
}

/// A UDP relay in front of one BMC; stops when dropped.
pub struct UdpRelay {
    pub port: u16,
    pub stats: Arc<Stats>,
    /// Change the network's behaviour while the relay runs (a partition,
    /// then healing).
    pub blackhole: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl UdpRelay {
    /// The same faults both ways.
    pub async fn start(bmc: SocketAddr, seed: u64, faults: Faults, filter: Filter) -> UdpRelay {
        UdpRelay::start_each(bmc, seed, faults, faults, filter).await
    }

    /// `to_bmc` for requests, `to_daemon` for answers.
    pub async fn start_each(
        bmc: SocketAddr,
        seed: u64,
        to_bmc: Faults,
        to_daemon: Faults,
        filter: Filter,
    ) -> UdpRelay {
        let bind: SocketAddr = if bmc.is_ipv4() {
            "127.0.0.1:0".parse().unwrap()
        } else {
            "[::1]:0".parse().unwrap()
        };
        let front = Arc::new(UdpSocket::bind(bind).await.expect("relay socket"));
        let port = front.local_addr().unwrap().port();
        let stats = Arc::new(Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let blackhole = Arc::new(AtomicBool::new(false));
        let up = Arc::new(Dice::new(seed, Dir::ToBmc, to_bmc));
        let down = Arc::new(Dice::new(seed, Dir::ToDaemon, to_daemon));
        let (s, st, bh) = (stats.clone(), stop.clone(), blackhole.clone());
        let task = tokio::spawn(async move {
            // One back socket per daemon socket, like a NAT: answers go back
            // to the socket that asked.
            let mut backs: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
            let mut buf = vec![0u8; 4096];
            while !st.load(Ordering::SeqCst) {
                let Ok(Ok((n, client))) =
                    tokio::time::timeout(Duration::from_millis(100), front.recv_from(&mut buf))
                        .await
                else {
                    continue;
                };
                let back = match backs.get(&client) {
                    Some(b) => b.clone(),
                    None => {
                        let b = Arc::new(UdpSocket::bind(bind).await.expect("relay back socket"));
                        b.connect(bmc).await.expect("connect to the BMC");
                        backs.insert(client, b.clone());
                        tokio::spawn(pump_answers(
                            b.clone(),
                            front.clone(),
                            client,
                            down.clone(),
                            filter.clone(),
                            s.clone(),
                            st.clone(),
                            bh.clone(),
                        ));
                        b
                    }
                };
                let d = buf[..n].to_vec();
                forward(Dir::ToBmc, d, &up, &filter, &s, &bh, move |d| {
                    let back = back.clone();
                    async move {
                        let _ = back.send(&d).await;
                    }
                });
            }
        });
        UdpRelay {
            port,
            stats,
            blackhole,
            stop,
            tasks: vec![task],
        }
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn pump_answers(
    back: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    client: SocketAddr,
    dice: Arc<Dice>,
    filter: Filter,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    blackhole: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 4096];
    while !stop.load(Ordering::SeqCst) {
        let n = match tokio::time::timeout(Duration::from_millis(100), back.recv(&mut buf)).await {
            Ok(Ok(n)) => n,
            // ICMP port unreachable from a dead BMC: keep listening.
            Ok(Err(_)) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            Err(_) => continue,
        };
        let d = buf[..n].to_vec();
        let front = front.clone();
        forward(
            Dir::ToDaemon,
            d,
            &dice,
            &filter,
            &stats,
            &blackhole,
            move |d| {
                let front = front.clone();
                async move {
                    let _ = front.send_to(&d, client).await;
                }
            },
        );
    }
}

/// Applies the filter and the dice to one datagram and schedules its
/// delivery (and a copy's).
fn forward<F, Fut>(
    dir: Dir,
    d: Vec<u8>,
    dice: &Dice,
    filter: &Filter,
    stats: &Stats,
    blackhole: &AtomicBool,
    send: F,
) where
    F: Fn(Vec<u8>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let counts = stats.counts(dir);
    counts.seen.fetch_add(1, Ordering::SeqCst);
    let arrow = match dir {
        Dir::ToBmc => "→",
        Dir::ToDaemon => "←",
    };
    let kind = ipmi_kind(&d)
        .map(|k| k.name())
        .unwrap_or_else(|| "?".into());
    let fate = if !filter(dir, &d) || blackhole.load(Ordering::SeqCst) {
        Fate::Filtered
    } else {
        dice.datagram()
    };
    stats.note(format!("{arrow} {kind}: {fate:?}"));
    match fate {
        Fate::Filtered => {
            counts.filtered.fetch_add(1, Ordering::SeqCst);
        }
        Fate::Lost => {
            counts.lost.fetch_add(1, Ordering::SeqCst);
        }
        Fate::Delivered(delay, copy) => {
            if delay > dice.faults.delay + dice.faults.jitter {
                counts.held.fetch_add(1, Ordering::SeqCst);
            }
            let send = Arc::new(send);
            if let Some(again) = copy {
                counts.duplicated.fetch_add(1, Ordering::SeqCst);
                let (s, d) = (send.clone(), d.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(delay + again).await;
                    s(d).await;
                });
            }
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                send(d).await;
            });
        }
    }
}

// ---------------------------------------------------------------------------
// TCP (Redfish over HTTPS)

/// A TCP relay in front of one BMC; stops (and cuts its connections) when dropped.
pub struct TcpRelay {
    pub port: u16,
    pub stats: Arc<Stats>,
    /// Connections accepted.
    pub connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpRelay {
    pub async fn start(backend: SocketAddr, seed: u64, faults: Faults) -> TcpRelay {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("relay listener");
        let port = listener.local_addr().unwrap().port();
        let stats = Arc::new(Stats::default());
        let connections = Arc::new(AtomicUsize::new(0));
        let up = Arc::new(Dice::new(seed, Dir::ToBmc, faults));
        let down = Arc::new(Dice::new(seed, Dir::ToDaemon, faults));
        let (s, c) = (stats.clone(), connections.clone());
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let (up, down, s) = (up.clone(), down.clone(), s.clone());
                conns.spawn(async move {
                    let Ok(server) = TcpStream::connect(backend).await else {
                        return; // the BMC is down: the client sees its connection close
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    relay_connection(client, server, up, down, s).await;
                });
            }
        });
        TcpRelay {
            port,
            stats,
            connections,
            task,
        }
    }
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay_connection(
    client: TcpStream,
    server: TcpStream,
    up: Arc<Dice>,
    down: Arc<Dice>,
    stats: Arc<Stats>,
) {
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let cut = Arc::new(tokio::sync::Notify::new());
    let a = tokio::spawn(pump_bytes(
        Dir::ToBmc,
        cr,
        sw,
        up,
        stats.clone(),
        cut.clone(),
    ));
    let b = tokio::spawn(pump_bytes(Dir::ToDaemon, sr, cw, down, stats, cut.clone()));
    let (abort_a, abort_b) = (a.abort_handle(), b.abort_handle());
    tokio::select! {
        _ = cut.notified() => {
            abort_a.abort();
            abort_b.abort();
        }
        _ = async { let _ = a.await; let _ = b.await; } => {}
    }
}

/// Copies one direction chunk by chunk, each delivered at its own time but in
/// order. Ends at EOF (half-closing the other side) or at a cut.
async fn pump_bytes(
    dir: Dir,
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    dice: Arc<Dice>,
    stats: Arc<Stats>,
    cut: Arc<tokio::sync::Notify>,
) {
    let counts = stats.counts(dir);
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Option<Vec<u8>>)>();
    let writer = tokio::spawn(async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            match chunk {
                Some(bytes) => {
                    if to.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                None => {
                    let _ = to.shutdown().await;
                    return;
                }
            }
        }
    });
    let mut last = Instant::now();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = tx.send((last, None));
                break;
            }
            Ok(n) => n,
        };
        counts.seen.fetch_add(1, Ordering::SeqCst);
        let (delay, lost, cut_now) = dice.chunk();
        if lost {
            counts.lost.fetch_add(1, Ordering::SeqCst);
        }
        if cut_now {
            counts.cut.fetch_add(1, Ordering::SeqCst);
            stats.note(format!("{dir:?}: connection cut"));
            // RST to the side that just spoke; the other sees its
            // connection close when the relay drops it.
            let _ = from.as_ref().set_zero_linger();
            cut.notify_waiters();
            cut.notify_one();
            writer.abort();
            return;
        }
        last = last.max(Instant::now() + delay);
        if tx.send((last, Some(buf[..n].to_vec()))).is_err() {
            break;
        }
    }
    let _ = writer.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_fates() {
        let f = Faults {
            duplicate: 0.2,
            reorder: 0.2,
            hold: Duration::from_millis(300),
            ..Faults::lossy()
        };
        let a = Dice::new(42, Dir::ToBmc, f);
        let b = Dice::new(42, Dir::ToBmc, f);
        let fa: Vec<Fate> = (0..500).map(|_| a.datagram()).collect();
        let fb: Vec<Fate> = (0..500).map(|_| b.datagram()).collect();
        assert_eq!(fa, fb);
        let lost = fa.iter().filter(|f| **f == Fate::Lost).count();
        assert!((100..200).contains(&lost), "{lost} of 500 lost");
    }

    #[test]
    fn ipmi_datagrams_are_named() {
        // An IPMI request in the clear: Chassis Control, hard reset.
        let mut d = vec![0x06, 0x00, 0xFF, 0x07, 0x06, 0x00];
        d.extend_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0, 8, 0]);
        d.extend_from_slice(&[0x20, 0x00 << 2, 0xE0, 0x81, 0x04, 0x02, 0x03, 0x00]);
        assert_eq!(
            ipmi_kind(&d),
            Some(IpmiKind::Message {
                netfn: 0,
                cmd: 2,
                completion: None
            })
        );
        assert_eq!(chassis_control_action(&d), Some(3));
        assert!(ipmi_kind(&d).unwrap().is(0x00, 0x02));
        d[5] = 0xC0;
        assert_eq!(ipmi_kind(&d), Some(IpmiKind::Encrypted));
        d[5] = 0x12;
        assert_eq!(ipmi_kind(&d).unwrap().name(), "RAKP 1");
        assert_eq!(ipmi_kind(&d[..10]), None);
    }
}
