//! Kill points: places in the runner where a crash test stops the agent dead,
//! to prove that recovery resumes exactly where the step log says.
//!
//! Only test builds and builds with the `kill-points` feature have them; in a
//! production build [`KillPoints::hit`] is an empty function. The daemon reads
//! `RACK_AGENT_KILL_AT=KIND:STEP:BOUNDARY[#N][@SERVER]` and aborts the process
//! at the N-th (default first) time that boundary is reached; engine tests
//! freeze the runner there instead and then drop the engine.

use std::fmt;
use std::str::FromStr;

use crate::model::ActionKind;

/// A point in a step's life, in the order the runner passes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Boundary {
    /// The action is recorded and about to run (no step yet).
    Accepted,
    /// The step is on disk as started; its BMC command has not been sent
    /// (for a wait: no read made yet).
    Started,
    /// The BMC answered; the answer is not on disk yet.
    Answered,
    /// The step is on disk as finished or failed.
    Finished,
}

impl Boundary {
    pub const ALL: [Boundary; 4] = [
        Boundary::Accepted,
        Boundary::Started,
        Boundary::Answered,
        Boundary::Finished,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Boundary::Accepted => "accepted",
            Boundary::Started => "started",
            Boundary::Answered => "answered",
            Boundary::Finished => "finished",
        }
    }
}

/// Where to stop: `reboot_soft:power_on:answered`, `stop:-:accepted`,
/// `reboot_hard:wait_restart:started#2@n-07`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillPoint {
    pub kind: ActionKind,
    /// The step's name; unused for `Accepted`.
    pub step: String,
    pub boundary: Boundary,
    /// Stop at the n-th time the boundary is reached (1 = the first).
    pub nth: u32,
    /// Only for this server's actions.
    pub server: Option<String>,
}

impl fmt::Display for KillPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.kind, self.step, self.boundary.as_str())?;
        if self.nth != 1 {
            write!(f, "#{}", self.nth)?;
        }
        if let Some(s) = &self.server {
            write!(f, "@{s}")?;
        }
        Ok(())
    }
}

impl FromStr for KillPoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("kill point {s:?} is not KIND:STEP:BOUNDARY[#N][@SERVER]");
        let (rest, server) = match s.split_once('@') {
            Some((r, srv)) => (r, Some(srv.to_string())),
            None => (s, None),
        };
        let (rest, nth) = match rest.split_once('#') {
            Some((r, n)) => (r, n.parse::<u32>().map_err(|_| bad())?.max(1)),
            None => (rest, 1),
        };
        let mut parts = rest.split(':');
        let (Some(kind), Some(step), Some(boundary), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let kind = ActionKind::parse(kind).ok_or_else(bad)?;
        let boundary = Boundary::ALL
            .into_iter()
            .find(|b| b.as_str() == boundary)
            .ok_or_else(bad)?;
        Ok(KillPoint {
            kind,
            step: step.to_string(),
            boundary,
            nth,
            server,
        })
    }
}

/// What happens at a kill point.
#[cfg(any(test, feature = "kill-points"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillMode {
    /// End the process at once, as SIGKILL would: no destructor, no flush.
    Abort,
    /// Stop the runner forever at that point (engine tests then drop the
    /// engine and start a new one on the same database).
    Freeze,
}

/// The kill point armed in this engine, if any.
#[derive(Debug, Default)]
pub struct KillPoints {
    #[cfg(any(test, feature = "kill-points"))]
    armed: std::sync::Mutex<Option<(KillPoint, KillMode, u32)>>,
    #[cfg(any(test, feature = "kill-points"))]
    fired: tokio::sync::Notify,
    #[cfg(any(test, feature = "kill-points"))]
    fired_flag: std::sync::atomic::AtomicBool,
}

/// The variable the daemon reads its kill point from.
pub const ENV: &str = "RACK_AGENT_KILL_AT";

impl KillPoints {
    /// Arms the kill point `RACK_AGENT_KILL_AT` names, to abort the process
    /// there. A build without kill points says loudly that it ignores it.
    pub fn from_env() -> KillPoints {
        let points = KillPoints::default();
        let Ok(spec) = std::env::var(ENV) else {
            return points;
        };
        #[cfg(feature = "kill-points")]
        match spec.parse::<KillPoint>() {
            Ok(point) => {
                tracing::warn!(kill_point = %point, "crash test: the agent will abort at this kill point");
                points.arm(point, KillMode::Abort);
            }
            Err(e) => {
                eprintln!("rack-agent: {ENV}: {e}");
                std::process::exit(2);
            }
        }
        #[cfg(not(feature = "kill-points"))]
        {
            tracing::error!(
                value = %spec,
                "{ENV} is set but this build has no kill points (build with --features kill-points); ignoring it"
            );
            eprintln!("rack-agent: {ENV} is set but this build has no kill points (build with --features kill-points); ignoring it");
        }
        points
    }

    #[cfg(any(test, feature = "kill-points"))]
    pub fn arm(&self, point: KillPoint, mode: KillMode) {
        *self.armed.lock().unwrap_or_else(|e| e.into_inner()) = Some((point, mode, 0));
    }

    /// Resolves once a frozen kill point has been reached.
    #[cfg(any(test, feature = "kill-points"))]
    pub async fn fired(&self) {
        use std::sync::atomic::Ordering;
        loop {
            let notified = self.fired.notified();
            if self.fired_flag.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }

    /// Called by the runner at every boundary.
    #[cfg(any(test, feature = "kill-points"))]
    pub async fn hit(&self, kind: ActionKind, server: &str, step: &str, boundary: Boundary) {
        use std::sync::atomic::Ordering;
        let mode = {
            let mut armed = self.armed.lock().unwrap_or_else(|e| e.into_inner());
            let Some((point, mode, seen)) = armed.as_mut() else {
                return;
            };
            let matches = point.kind == kind
                && point.boundary == boundary
                && (boundary == Boundary::Accepted || point.step == step)
                && point.server.as_deref().is_none_or(|s| s == server);
            if !matches {
                return;
            }
            *seen += 1;
            if *seen != point.nth {
                return;
            }
            tracing::warn!(server_id = server, kill_point = %point, "kill point reached");
            *mode
        };
        match mode {
            KillMode::Abort => {
                eprintln!("rack-agent: kill point reached; aborting");
                std::process::abort();
            }
            KillMode::Freeze => {
                self.fired_flag.store(true, Ordering::SeqCst);
                self.fired.notify_waiters();
                std::future::pending::<()>().await;
            }
        }
    }

    #[cfg(not(any(test, feature = "kill-points")))]
    #[inline(always)]
    pub async fn hit(&self, _kind: ActionKind, _server: &str, _step: &str, _boundary: Boundary) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_points_parse_and_print() {
        for s in [
            "reboot_soft:power_on:answered",
            "reboot_hard:wait_restart:started#2@n-07",
            "stop:-:accepted",
        ] {
            let p: KillPoint = s.parse().unwrap();
            assert_eq!(p.to_string(), s);
        }
        let p: KillPoint = "reinstall:set_boot_pxe:finished@n1".parse().unwrap();
        assert_eq!(p.kind, ActionKind::Reinstall);
        assert_eq!(p.boundary, Boundary::Finished);
        assert_eq!(p.server.as_deref(), Some("n1"));
        for bad in [
            "reboot:x:started",
            "reboot_hard:x",
            "reboot_hard:x:later",
            "a:b:c:d",
        ] {
            assert!(bad.parse::<KillPoint>().is_err(), "{bad}");
        }
    }
}
