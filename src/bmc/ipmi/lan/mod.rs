//! Our RMCP+ (IPMI v2.0 over LAN) session layer, on tokio UDP and the RustCrypto
//! primitives (hmac, sha1, aes, cbc).
//!
//! Why our own and not `ipmi-rs` 0.6: against ipmi_sim the crate activates
//! sessions fine, but it never closes them and does not expose the session ID
//! needed to send Close Session (ipmi_sim admits ~62 sessions, so a restarting
//! daemon locks everybody out), it does not retransmit, does not check sequence
//! numbers or integrity codes on receive, blocks a thread per call, and binds
//! `[::]:0` (fails where IPv6 is disabled). Closing those gaps from outside the
//! crate was not possible without patching it. This module is the only place
//! that knows the wire format of sessions; commands live in `super::commands`.
//!
//! What it carries is the message layer of `ipmi-rs-core` (the same project's
//! sans-IO crate): requests are the crate's `Message`, commands implement its
//! `IpmiCommand`, answers are its `Response`. The crate has no LAN or RMCP+
//! side, so the LAN message framing (`super::message`: addresses, rqSeq,
//! checksums), the RMCP+ packet format (`packet`) and the session activation
//! payloads (Open Session, RAKP 1–4, `rakp`) stay ours.
//!
//! What it guarantees:
//! - an IPv4 socket for an IPv4 BMC, connected, so ICMP "port unreachable"
//!   surfaces at once as `ConnectionRefused`;
//! - every request is retransmitted at most `attempts` times, each attempt
//!   waiting `per_attempt`; the caller decides the attempts (1 for
//!   non-idempotent commands);
//! - a reply is accepted only if its integrity code verifies, it decrypts, its
//!   session ID is ours, its session sequence number is new (16-packet
//!   window), and its NetFn/command/rqSeq match the request;
//! - a lost RAKP 4 is recovered: the re-sent RAKP 3 may be answered inside
//!   the just-activated session (integrity-protected, maybe encrypted),
//!   which is accepted once its integrity code verifies;
//! - `close` sends Close Session.

pub mod packet;
pub mod rakp;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::RngCore;
use tokio::net::UdpSocket;

use self::packet::{payload, Inbound, Security};
use self::rakp::{CipherSuite, Handshake};
use super::commands::{self, CloseSession, Command, Privilege, SetSessionPrivilege};
use super::message::{self, completion_meaning, DecodeError};
use ipmi_rs_core::connection::{CompletionErrorCode, Message, Response};

/// What went wrong in the session layer. Mapped to `BmcError` by the driver.
#[derive(Debug, thiserror::Error)]
pub enum LanError {
    #[error("no answer after {attempts} attempt(s) in {waited:?}")]
    Timeout { waited: Duration, attempts: u32 },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// An RMCP+ status code ≠ 0 during activation.
    #[error("{stage} refused: {} (RMCP+ status {status:#04x})", rakp::status_meaning(*status))]
    Rejected { stage: &'static str, status: u8 },
    /// The BMC's RAKP 2 code does not match ours: the password is wrong.
    #[error("the BMC's key exchange code does not match this user's password")]
    BadPassword,
    #[error("{0}")]
    Decode(#[from] DecodeError),
    /// A completion code ≠ 0.
    #[error("{command}: {meaning} (completion code {code:#04x})")]
    Completion {
        command: &'static str,
        code: u8,
        meaning: &'static str,
    },
    #[error("{0}")]
    Invalid(String),
}

impl LanError {
    /// A completion code ≠ 0, as the crate reads it.
    pub fn completion(&self) -> Option<CompletionErrorCode> {
        match self {
            LanError::Completion { code, .. } => CompletionErrorCode::try_from(*code).ok(),
            _ => None,
        }
    }
}

/// Timing of one exchange.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    pub attempts: u32,
    pub per_attempt: Duration,
}

/// An active RMCP+ session with one BMC.
#[derive(Debug)]
pub struct Session {
    sock: UdpSocket,
    peer: SocketAddr,
    console_sid: u32,
    bmc_sid: u32,
    sec: Security,
    out_seq: u32,
    in_window: SeqWindow,
    rq_seq: u8,
    last_used: Instant,
}

/// Accepts each inbound session sequence number once, within 16 of the highest.
#[derive(Debug, Default)]
struct SeqWindow {
    highest: u32,
    /// Bit i set: `highest - i` was seen.
    seen: u32,
}

impl SeqWindow {
    fn accept(&mut self, seq: u32) -> bool {
        if seq > self.highest {
            let shift = seq - self.highest;
            self.seen = if shift >= 32 { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.highest = seq;
            true
        } else {
            let back = self.highest - seq;
            if back >= 16 || self.seen & (1 << back) != 0 {
                return false;
            }
            self.seen |= 1 << back;
            true
        }
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rng().fill_bytes(&mut b);
    b
}

/// Sends `packet` and waits up to `wait` for a datagram that `accept` takes.
/// `Ok(None)` when nothing acceptable arrived in time.
async fn send_and_wait<T>(
    sock: &UdpSocket,
    packet: &[u8],
    wait: Duration,
    mut accept: impl FnMut(&[u8]) -> Option<T>,
) -> std::io::Result<Option<T>> {
    sock.send(packet).await?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
            Err(_) => return Ok(None),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(n)) => {
                if let Some(t) = accept(&buf[..n]) {
                    return Ok(Some(t));
                }
            }
        }
    }
}

/// Sends a sessionless activation message (retransmitted) and returns the
/// payload of the first answer of type `want` carrying our `tag`.
///
/// `session`: the console session ID and the keys the session will have,
/// for the last step. A BMC that already activated the session when a
/// re-sent RAKP 3 arrives (its RAKP 4 was lost) may answer inside the
/// session, integrity-protected with K1 and, in an encrypting session,
/// encrypted — ipmi_sim 2.0.33 does. Such an answer is accepted once its
/// integrity code verifies (and it decrypts), with any of the keys given.
async fn handshake_step(
    sock: &UdpSocket,
    request_type: u8,
    want: u8,
    tag: u8,
    body: &[u8],
    retry: Retry,
    session: Option<(u32, &[Security])>,
) -> Result<Vec<u8>, LanError> {
    let pkt = packet::encode(request_type, 0, 0, body, &Security::default(), [0; 16]);
    let started = Instant::now();
    for _ in 0..retry.attempts {
        let got = send_and_wait(sock, &pkt, retry.per_attempt, |d| {
            let inb = packet::decode(d, &Security::default()).ok().or_else(|| {
                let (sid, keys) = session?;
                keys.iter()
                    .filter_map(|sec| packet::decode(d, sec).ok())
                    .find(|inb| inb.authenticated && inb.session_id == sid)
            })?;
            (inb.payload_type == want && inb.payload.first() == Some(&tag)).then_some(inb.payload)
        })
        .await?;
        if let Some(p) = got {
            return Ok(p);
        }
    }
    Err(LanError::Timeout {
        waited: started.elapsed(),
        attempts: retry.attempts,
    })
}

impl Session {
    /// Resolves nothing: `peer` is an address. Binds a socket of the same
    /// family, activates an RMCP+ session and raises it to administrator.
    pub async fn open(
        peer: SocketAddr,
        username: &str,
        password: &[u8],
        suite: CipherSuite,
        retry: Retry,
    ) -> Result<Session, LanError> {
        if password.len() > 20 || username.len() > 16 {
            return Err(LanError::Invalid(
                "IPMI v2.0 allows user names up to 16 bytes and passwords up to 20".into(),
            ));
        }
        let bind: SocketAddr = if peer.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = UdpSocket::bind(bind).await?;
        sock.connect(peer).await?;

        let mut console_sid = 0;
        while console_sid == 0 {
            console_sid = u32::from_le_bytes(random());
        }
        let tag = random::<1>()[0];

        // Open Session.
        let body = rakp::open_session_request(tag, console_sid, &suite);
        let p = handshake_step(
            &sock,
            payload::OPEN_SESSION_REQUEST,
            payload::OPEN_SESSION_RESPONSE,
            tag,
            &body,
            retry,
            None,
        )
        .await?;
        let open = rakp::decode_open_session_response(&p)?;
        if open.status != 0 {
            return Err(LanError::Rejected {
                stage: "open session",
                status: open.status,
            });
        }
        if open.console_sid != console_sid
            || open.algorithms != [suite.auth, suite.integrity, suite.confidentiality]
            || open.bmc_sid == 0
        {
            return Err(LanError::Invalid(format!(
                "open session response does not match the request (algorithms {:?})",
                open.algorithms
            )));
        }

        // RAKP 1 / 2.
        let tag = tag.wrapping_add(1);
        let console_rand = random::<16>();
        let body = rakp::rakp1(tag, open.bmc_sid, &console_rand, username.as_bytes());
        let p = handshake_step(
            &sock,
            payload::RAKP1,
            payload::RAKP2,
            tag,
            &body,
            retry,
            None,
        )
        .await?;
        let r2 = rakp::decode_rakp2(&p)?;
        if r2.status != 0 {
            return Err(LanError::Rejected {
                stage: "RAKP 2",
                status: r2.status,
            });
        }
        if r2.console_sid != console_sid {
            return Err(LanError::Invalid("RAKP 2 for another session".into()));
        }
        let mut kuid = [0u8; 20];
        kuid[..password.len()].copy_from_slice(password);
        let hs = Handshake {
            console_sid,
            bmc_sid: open.bmc_sid,
            console_rand,
            bmc_rand: r2.bmc_rand,
            bmc_guid: r2.bmc_guid,
            username: username.as_bytes().to_vec(),
            kuid,
        };
        if !hs.rakp2_matches(&r2.auth_code) {
            // Free the BMC's half-open session slot now rather than at its
            // timeout (best effort: the BMC may answer with a RAKP 4 error).
            let abort = rakp::rakp3_error(tag.wrapping_add(1), open.bmc_sid, 0x0F);
            let pkt = packet::encode(payload::RAKP3, 0, 0, &abort, &Security::default(), [0; 16]);
            let _ = sock.send(&pkt).await;
            return Err(LanError::BadPassword);
        }

        // The session's keys are known from here on (SIK from both random
        // numbers): a RAKP 4 may come inside the session (see handshake_step).
        let sik = hs.sik();
        let k1 = Handshake::derived_key(&sik, 1);
        let k2 = Handshake::derived_key(&sik, 2);
        let mut aes_key = [0u8; 16];
        aes_key.copy_from_slice(&k2[..16]);
        let sec = Security {
            integrity: (suite.integrity != 0).then_some(k1),
            confidentiality: (suite.confidentiality != 0).then_some(aes_key),
        };
        // Such an answer is authenticated, and may or may not be encrypted.
        let answer_keys = [
            sec.clone(),
            Security {
                integrity: sec.integrity,
                confidentiality: None,
            },
        ];

        // RAKP 3 / 4.
        let tag = tag.wrapping_add(1);
        let body = rakp::rakp3(tag, open.bmc_sid, &hs.rakp3_code());
        let p = handshake_step(
            &sock,
            payload::RAKP3,
            payload::RAKP4,
            tag,
            &body,
            retry,
            Some((console_sid, &answer_keys)),
        )
        .await?;
        let r4 = rakp::decode_rakp4(&p)?;
        if r4.status != 0 {
            return Err(LanError::Rejected {
                stage: "RAKP 4",
                status: r4.status,
            });
        }
        let r4_verifies = r4.console_sid == console_sid && hs.rakp4_matches(&sik, &r4.icv);

        let mut s = Session {
            sock,
            peer,
            console_sid,
            bmc_sid: open.bmc_sid,
            sec,
            out_seq: 0,
            in_window: SeqWindow::default(),
            rq_seq: 0,
            last_used: Instant::now(),
        };
        let once = Retry {
            attempts: 1,
            per_attempt: retry.per_attempt,
        };
        if !r4_verifies {
            // The BMC said success (status 0), so it may hold the session
            // active: ask it to close (best effort; it ignores the request if
            // our keys are not its keys).
            let _ = s.close(once).await;
            return Err(LanError::Invalid(
                "RAKP 4 integrity check value does not verify".into(),
            ));
        }
        // Sessions start at User privilege: chassis control needs admin.
        if let Err(e) = s
            .run(SetSessionPrivilege(Privilege::Administrator), retry)
            .await
        {
            // Do not leave an unusable session holding a BMC slot.
            let _ = s.close(once).await;
            return Err(e);
        }
        Ok(s)
    }

    /// The BMC's session ID (what Close Session names).
    pub fn bmc_session_id(&self) -> u32 {
        self.bmc_sid
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Time since the last answered request.
    pub fn idle(&self) -> Duration {
        self.last_used.elapsed()
    }

    /// Sends one command (ours or the crate's); a completion code ≠ 0 is an
    /// error. Retransmitted up to `retry.attempts` times: pass 1 attempt for a
    /// command that is not idempotent.
    pub async fn run<C: Command>(&mut self, cmd: C, retry: Retry) -> Result<C::Output, LanError> {
        self.run_message::<C>(&cmd.into(), retry).await
    }

    /// [`Session::run`] for a command already turned into its request
    /// message (so that a caller can send it again in another session).
    pub async fn run_message<C: Command>(
        &mut self,
        msg: &Message,
        retry: Retry,
    ) -> Result<C::Output, LanError> {
        let rsp = self.request(msg, retry).await?;
        // The crate's `IpmiCommand::handle_completion_code` is not consulted:
        // no command of ipmi-rs-core 0.6 overrides it, and ours explain their
        // codes through `Command::completion_meaning`.
        if rsp.cc() != 0 {
            let code = rsp.cc();
            return Err(LanError::Completion {
                command: C::NAME,
                code,
                meaning: C::completion_meaning(code).unwrap_or_else(|| completion_meaning(code)),
            });
        }
        Ok(commands::decode::<C>(rsp.data())?)
    }

    /// Sends a request in the session, retransmitting with the same rqSeq and a
    /// new session sequence number, until an answer that passes every check.
    pub async fn request(&mut self, req: &Message, retry: Retry) -> Result<Response, LanError> {
        self.rq_seq = (self.rq_seq + 1) & 0x3f;
        let rq_seq = self.rq_seq;
        let msg = message::encode_request(req, rq_seq);
        let started = Instant::now();
        for _ in 0..retry.attempts {
            self.out_seq = self.out_seq.wrapping_add(1).max(1);
            let pkt = packet::encode(
                payload::IPMI,
                self.bmc_sid,
                self.out_seq,
                &msg,
                &self.sec,
                random(),
            );
            let (sec, console_sid, window) = (&self.sec, self.console_sid, &mut self.in_window);
            let got = send_and_wait(&self.sock, &pkt, retry.per_attempt, |d| {
                accept_reply(d, sec, console_sid, window, req, rq_seq)
            })
            .await?;
            if let Some(rsp) = got {
                self.last_used = Instant::now();
                return Ok(rsp);
            }
        }
        Err(LanError::Timeout {
            waited: started.elapsed(),
            attempts: retry.attempts,
        })
    }

    /// Closes the session at the BMC. An "invalid session ID" answer means it
    /// was already gone, which is what we wanted.
    pub async fn close(mut self, retry: Retry) -> Result<(), LanError> {
        let cmd = CloseSession {
            session_id: self.bmc_sid,
        };
        match self.run(cmd, retry).await {
            Ok(()) | Err(LanError::Completion { code: 0x87, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Every check a reply must pass; `None` drops the datagram.
fn accept_reply(
    d: &[u8],
    sec: &Security,
    console_sid: u32,
    window: &mut SeqWindow,
    req: &Message,
    rq_seq: u8,
) -> Option<Response> {
    let inb: Inbound = match packet::decode(d, sec) {
        Ok(i) => i,
        Err(e) => {
            tracing::debug!(error = %e, "dropped a datagram");
            return None;
        }
    };
    if inb.payload_type != payload::IPMI || inb.session_id != console_sid {
        return None;
    }
    let rsp = message::decode_response(&inb.payload)
        .map_err(|e| tracing::debug!(error = %e, "dropped a response"))
        .ok()?;
    if rsp.netfn_raw() != req.netfn_raw() | 1
        || rsp.cmd() != req.cmd()
        || rsp.seq() != i64::from(rq_seq)
    {
        return None;
    }
    // Only now, for an authentic reply: a replayed sequence number is dropped.
    if !window.accept(inb.seq) {
        tracing::debug!(seq = inb.seq, "dropped a replayed reply");
        return None;
    }
    Some(rsp)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random and mutated bytes through every decoder: errors, never panics.
    #[test]
    fn decoders_never_panic_on_garbage() {
        use super::super::commands::{
            GetBootFlags, GetChassisStatus, GetSystemRestartCause, SetSessionPrivilege,
        };
        use ipmi_rs_core::app::GetDeviceId;
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x1a2b);
        let sec = Security {
            integrity: Some([5; 20]),
            confidentiality: Some([6; 16]),
        };
        let valid = packet::encode(
            payload::IPMI,
            9,
            1,
            &[1, 2, 3, 4, 5, 6, 7, 8],
            &sec,
            [7; 16],
        );
        for _ in 0..20_000 {
            let mut b: Vec<u8> = if rng.random_bool(0.5) {
                let n = rng.random_range(0..80);
                (0..n).map(|_| rng.random()).collect()
            } else {
                let mut v = valid.clone();
                let i = rng.random_range(0..v.len());
                v[i] = rng.random();
                v.truncate(rng.random_range(0..=v.len()));
                v
            };
            if rng.random_bool(0.3) && b.len() > 16 {
                // Plausible header, random rest.
                b[..6].copy_from_slice(&[0x06, 0x00, 0xFF, 0x07, 0x06, rng.random()]);
            }
            let _ = packet::decode(&b, &sec);
            let _ = packet::decode(&b, &Security::default());
            let _ = message::decode_response(&b);
            let _ = rakp::decode_open_session_response(&b);
            let _ = rakp::decode_rakp2(&b);
            let _ = rakp::decode_rakp4(&b);
            let _ = commands::decode::<GetChassisStatus>(&b);
            let _ = commands::decode::<GetBootFlags>(&b);
            let _ = commands::decode::<GetSystemRestartCause>(&b);
            let _ = commands::decode::<SetSessionPrivilege>(&b);
            let _ = commands::decode::<GetDeviceId>(&b);
            let _ = packet::decrypt(&[1; 16], &b);
        }
    }

    #[test]
    fn sequence_window_accepts_each_number_once() {
        let mut w = SeqWindow::default();
        assert!(w.accept(1));
        assert!(!w.accept(1));
        assert!(w.accept(3));
        assert!(w.accept(2));
        assert!(!w.accept(2));
        assert!(w.accept(40));
        assert!(!w.accept(3), "too old");
        assert!(w.accept(30));
        assert!(!w.accept(24), "outside the window of 16");
    }
}
