//! Running the reference command-line tools: all at once, timed from the first
//! spawn to the last exit, killed if they overrun.

use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Spawns every command at once, waits for all; the wall time from the first
/// spawn to the last exit, and each one's output. Commands still running
/// after `limit` are killed and the call fails.
pub fn run_parallel(
    cmds: Vec<Command>,
    limit: Duration,
) -> Result<(Duration, Vec<Output>), String> {
    let t = Instant::now();
    let mut children = Vec::with_capacity(cmds.len());
    for mut c in cmds {
        let child = c
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {c:?}: {e}"))?;
        children.push(child);
    }
    let pids: Vec<u32> = children.iter().map(|c| c.id()).collect();
    let done = Arc::new(AtomicBool::new(false));
    let timed_out = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let done = done.clone();
        let timed_out = timed_out.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + limit;
            while !done.load(Ordering::Relaxed) {
                if Instant::now() > deadline {
                    timed_out.store(true, Ordering::Relaxed);
                    for p in &pids {
                        crate::reaper::signal(*p, "KILL");
                    }
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let mut outs = Vec::with_capacity(children.len());
    for c in children {
        outs.push(c.wait_with_output().map_err(|e| e.to_string())?);
    }
    let took = t.elapsed();
    done.store(true, Ordering::Relaxed);
    let _ = watchdog.join();
    if timed_out.load(Ordering::Relaxed) {
        return Err(format!("still running after {limit:?}; killed"));
    }
    Ok((took, outs))
}

/// The first failed output, described.
pub fn first_failure(outs: &[Output]) -> Option<String> {
    outs.iter().find(|o| !o.status.success()).map(|o| {
        format!(
            "{}: {} {}",
            o.status,
            String::from_utf8_lossy(&o.stdout).trim(),
            String::from_utf8_lossy(&o.stderr).trim()
        )
    })
}

pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success())
}
