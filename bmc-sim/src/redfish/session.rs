//! Redfish sessions of one BMC (SessionService): created by POST with a user
//! name and password, used with `X-Auth-Token`, ended by DELETE or by
//! `SessionTimeout` of inactivity; a limit per BMC as on real firmware.

use std::time::{Duration, Instant};

use crate::state::Counters;

#[derive(Clone)]
pub struct RfSession {
    pub id: String,
    pub token: String,
    pub user: String,
    pub last_activity: Instant,
}

impl std::fmt::Debug for RfSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RfSession")
            .field("id", &self.id)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub struct RedfishSessions {
    pub limit: usize,
    pub list: Vec<RfSession>,
    next_id: u64,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl RedfishSessions {
    pub fn new(limit: usize) -> RedfishSessions {
        RedfishSessions {
            limit,
            list: Vec::new(),
            next_id: 1,
        }
    }

    pub fn expire(&mut self, now: Instant, timeout: Duration, c: &mut Counters) {
        self.list.retain(|s| {
            let alive = now.saturating_duration_since(s.last_activity) < timeout;
            if !alive {
                c.redfish_sessions_expired += 1;
            }
            alive
        });
    }

    /// A new session, or `None` when the limit is reached.
    pub fn create(&mut self, user: &str, now: Instant) -> Option<RfSession> {
        if self.list.len() >= self.limit {
            return None;
        }
        let s = RfSession {
            id: format!("{}", self.next_id),
            token: hex(&rand::random::<[u8; 16]>()),
            user: user.to_string(),
            last_activity: now,
        };
        self.next_id += 1;
        self.list.push(s.clone());
        Some(s)
    }

    /// The session a token belongs to, marked as used now.
    pub fn touch(&mut self, token: &str, now: Instant) -> Option<&RfSession> {
        let s = self.list.iter_mut().find(|s| s.token == token)?;
        s.last_activity = now;
        Some(s)
    }

    pub fn delete(&mut self, id: &str) -> bool {
        let before = self.list.len();
        self.list.retain(|s| s.id != id);
        self.list.len() != before
    }
}
