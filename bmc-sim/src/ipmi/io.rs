//! Moving datagrams for N BMCs: one UDP socket per BMC (a port each, as real
//! BMCs have an address each), served either by
//!
//! - `epoll` (default): a few threads, each owning a shard of the sockets in
//!   one edge-triggered `mio::Poll`; a ready socket is drained and answered in
//!   place. No task, no wake-up, no allocation per idle socket; or
//! - `tasks`: one tokio task per socket, awaiting `recv_from`.
//!
//! Both call the same [`super::handle`]; the README gives what each costs at
//! N = 10,000.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;

use crate::Sim;

/// Binds `n` UDP sockets on consecutive ports of 127.0.0.1 from `base`; with
/// `base` 0, finds a free run of `n` ports itself.
pub fn bind(base: u16, n: usize) -> anyhow::Result<(u16, Vec<UdpSocket>)> {
    crate::ports::bind_run(base, n, |port| UdpSocket::bind((Ipv4Addr::LOCALHOST, port)))
}

/// Serves the sockets on `threads` threads with edge-triggered epoll.
pub fn serve_epoll(sim: Arc<Sim>, sockets: Vec<UdpSocket>, threads: usize) -> anyhow::Result<()> {
    let threads = threads.max(1);
    let mut shards: Vec<Vec<(usize, UdpSocket)>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, s) in sockets.into_iter().enumerate() {
        shards[i % threads].push((i, s));
    }
    for (t, shard) in shards.into_iter().enumerate() {
        let sim = sim.clone();
        let poll = mio::Poll::new()?;
        let mut socks = Vec::with_capacity(shard.len());
        let mut index = Vec::with_capacity(shard.len());
        for (token, (i, s)) in shard.into_iter().enumerate() {
            s.set_nonblocking(true)?;
            let mut s = mio::net::UdpSocket::from_std(s);
            poll.registry()
                .register(&mut s, mio::Token(token), mio::Interest::READABLE)?;
            socks.push(s);
            index.push(i);
        }
        std::thread::Builder::new()
            .name(format!("ipmi-{t}"))
            .spawn(move || epoll_loop(&sim, poll, &socks, &index))?;
    }
    Ok(())
}

fn epoll_loop(sim: &Sim, mut poll: mio::Poll, socks: &[mio::net::UdpSocket], index: &[usize]) {
    let mut events = mio::Events::with_capacity(1024);
    let mut buf = [0u8; 2048];
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            tracing::error!(error = %e, "epoll failed; this IPMI shard stops");
            return;
        }
        for ev in events.iter() {
            let token = ev.token().0;
            let (sock, bmc) = (&socks[token], &sim.bmcs[index[token]]);
            // Edge-triggered: read until the socket is empty.
            loop {
                match sock.recv_from(&mut buf) {
                    Ok((n, peer)) => {
                        if let Some(reply) = super::handle(sim, bmc, &buf[..n]) {
                            send(sock, &reply, peer);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    // ICMP errors of earlier sends and the like: nothing to do.
                    Err(_) => break,
                }
            }
        }
    }
}

fn send(sock: &mio::net::UdpSocket, reply: &[u8], peer: SocketAddr) {
    // A full send buffer drops the answer, as a busy BMC would.
    let _ = sock.send_to(reply, peer);
}

/// Serves each socket from its own tokio task.
pub fn serve_tasks(sim: Arc<Sim>, sockets: Vec<UdpSocket>) -> anyhow::Result<()> {
    for (i, s) in sockets.into_iter().enumerate() {
        s.set_nonblocking(true)?;
        let s = tokio::net::UdpSocket::from_std(s)?;
        let sim = sim.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            loop {
                let Ok((n, peer)) = s.recv_from(&mut buf).await else {
                    continue;
                };
                let reply = super::handle(&sim, &sim.bmcs[i], &buf[..n]);
                if let Some(reply) = reply {
                    let _ = s.send_to(&reply, peer).await;
                }
            }
        });
    }
    Ok(())
}
