//! Runs of consecutive loopback ports: N BMCs on N ports from a base, or, with
//! base 0, a free run found by the simulator itself (bound as it is found, so
//! no other process can take a port between a check and the bind).

use anyhow::{bail, Context};

/// Binds `n` consecutive ports from `base` with `bind`; with `base` 0, tries
/// random bases in 20000..60000 until a whole run binds.
pub fn bind_run<T>(
    base: u16,
    n: usize,
    bind: impl Fn(u16) -> std::io::Result<T>,
) -> anyhow::Result<(u16, Vec<T>)> {
    if n == 0 {
        return Ok((base, Vec::new()));
    }
    if n > 40_000 {
        bail!("{n} ports do not fit in the port range");
    }
    if base != 0 {
        if base as usize + n - 1 > u16::MAX as usize {
            bail!("ports {base}..{base}+{n} go past 65535");
        }
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let port = base + i as u16;
            out.push(bind(port).with_context(|| format!("binding 127.0.0.1:{port}"))?);
        }
        return Ok((base, out));
    }
    let span = 40_000 - n as u32;
    for _ in 0..100 {
        let base = 20_000 + (rand::random::<u32>() % span.max(1)) as u16;
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            match bind(base + i as u16) {
                Ok(s) => out.push(s),
                Err(_) => break,
            }
        }
        if out.len() == n {
            return Ok((base, out));
        }
    }
    bail!("no free run of {n} consecutive ports found in 20000..60000")
}
