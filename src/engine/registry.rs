//! The servers the engine knows: their records, their BMC drivers, where
//! their passwords come from, enrolment and removal.

use std::path::PathBuf;
use std::sync::Arc;

use tracing::{info, warn};

use super::request::{validate_enroll, EnrollRequest};
use super::{
    not_found_server, vm_state_for, with_timeout, Engine, EngineError, Inner, Result, Slot,
};
use crate::bmc::{Bmc, BmcError, Endpoint, Power, Secret, SharedBmc};
use crate::model::*;
use crate::policy::Op;
use crate::store::Write;

/// A BMC the agent could not set up (a missing secret file, say): every call
/// answers with the reason, so the server shows it instead of vanishing.
#[derive(Debug)]
struct BrokenBmc(BmcError);

#[async_trait::async_trait]
impl Bmc for BrokenBmc {
    async fn capabilities(&self) -> std::result::Result<crate::bmc::Capabilities, BmcError> {
        Err(self.0.clone())
    }
    async fn power_state(&self) -> std::result::Result<Power, BmcError> {
        Err(self.0.clone())
    }
    async fn power(&self, _op: crate::bmc::PowerOp) -> std::result::Result<(), BmcError> {
        Err(self.0.clone())
    }
    async fn set_boot_once(&self, _d: crate::bmc::BootDevice) -> std::result::Result<(), BmcError> {
        Err(self.0.clone())
    }
}

impl Engine {
    /// Builds the driver for a record and puts the server in the map.
    pub(super) fn install(&self, rec: ServerRecord) {
        let bmc = self.connect(&rec).unwrap_or_else(|e| {
            warn!(server_id = %rec.id, bmc = %rec.bmc.key(), error = %e, "BMC setup failed");
            Arc::new(BrokenBmc(e)) as SharedBmc
        });
        insert_slot(&mut self.lock(), rec, bmc);
    }

    pub(super) fn connect(&self, rec: &ServerRecord) -> std::result::Result<SharedBmc, BmcError> {
        let password = self.resolve_secret(&rec.bmc.credential)?;
        let endpoint = Endpoint {
            protocol: rec.bmc.protocol,
            address: rec.bmc.address.clone(),
            port: rec.bmc.port,
            username: rec.bmc.username.clone(),
            password,
            options: rec.bmc.options.clone(),
        };
        self.factory.connect(&rec.id, &endpoint)
    }

    /// Reads a password file; refuses one that others may read.
    fn resolve_secret(&self, cred: &Credential) -> std::result::Result<Secret, BmcError> {
        use std::os::unix::fs::PermissionsExt;
        match cred {
            Credential::Inline(s) => Ok(s.clone()),
            Credential::File(_) | Credential::Stored(_) => {
                let path = self.secret_path(cred);
                let meta = std::fs::metadata(&path).map_err(|e| {
                    BmcError::Unreachable(format!(
                        "cannot read password file {}: {e}",
                        path.display()
                    ))
                })?;
                if meta.permissions().mode() & 0o007 != 0 {
                    return Err(BmcError::Unreachable(format!(
                        "password file {} is readable by others; refusing it (chmod o-rwx)",
                        path.display()
                    )));
                }
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    BmcError::Unreachable(format!(
                        "cannot read password file {}: {e}",
                        path.display()
                    ))
                })?;
                Ok(Secret::new(text.trim_end_matches(['\n', '\r'])))
            }
        }
    }

    fn secret_path(&self, cred: &Credential) -> PathBuf {
        match cred {
            Credential::Stored(name) => self.settings.secrets_dir.join(name),
            Credential::File(name) => self.settings.credentials_dir.join(name),
            Credential::Inline(_) => PathBuf::new(),
        }
    }

    /// Moves an inline password to a 0600 file of its own, so neither the
    /// database nor any answer ever holds it.
    fn store_secret(&self, server_id: &str, secret: &Secret) -> Result<Credential> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let dir = &self.settings.secrets_dir;
        let io_err = |e: std::io::Error| {
            EngineError::Store(crate::store::StoreError::Dir {
                path: dir.display().to_string(),
                source: e,
            })
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err)?;
        let name = format!("{server_id}.pass");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(dir.join(&name))
            .map_err(io_err)?;
        f.write_all(secret.expose().as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(io_err)?;
        Ok(Credential::Stored(name))
    }

    // ---- servers ----

    pub async fn enroll(&self, caller: &Caller, req: EnrollRequest) -> Result<ServerRecord> {
        self.settings.policy.check(caller, Op::Enroll, None)?;
        validate_server_id(&req.id).map_err(EngineError::InvalidArgument)?;
        validate_enroll(&req)?;
        if self.lock().servers.contains_key(&req.id) {
            return Err(EngineError::AlreadyExists {
                what: "server",
                id: req.id,
            });
        }
        let mut rec = new_record(&req.id, &req.project_id, req.bmc, Source::Api, None);
        let bmc = self.connect(&rec).map_err(|source| EngineError::Bmc {
            server: rec.id.clone(),
            bmc: rec.bmc.key(),
            source,
        })?;
        // Whatever refuses the enrolment from here on closes what the driver
        // opened at the BMC (a session) before answering.
        let stored = match self.verify_and_store(&mut rec, &bmc, req.skip_verify).await {
            Ok(()) => Ok(()),
            Err(e) => {
                bmc.close().await;
                Err(e)
            }
        };
        stored?;
        info!(server_id = %rec.id, bmc = %rec.bmc.key(), protocol = rec.bmc.protocol.as_str(), "server enrolled");
        Ok(rec)
    }

    /// Reads the new server's BMC (unless `skip_verify`), records the server
    /// and puts it in the map, under one lock so two enrolments of one id
    /// cannot both pass.
    async fn verify_and_store(
        &self,
        rec: &mut ServerRecord,
        bmc: &SharedBmc,
        skip_verify: bool,
    ) -> Result<()> {
        if !skip_verify {
            let t = self.settings.timeouts.bmc_command;
            let bmc_err = |source| EngineError::Bmc {
                server: rec.id.clone(),
                bmc: rec.bmc.key(),
                source,
            };
            with_timeout(t, bmc.capabilities()).await.map_err(bmc_err)?;
            let power = with_timeout(t, bmc.power_state()).await.map_err(bmc_err)?;
            rec.power = power.into();
            rec.power_observed_at = Some(now_ms());
            rec.vm_state = vm_state_for(power.into());
            // Who it is: recorded, or why not; never a reason to refuse.
            self.read_identity(bmc, rec).await;
        }
        let ticket = {
            let mut inner = self.lock();
            if inner.servers.contains_key(&rec.id) {
                return Err(EngineError::AlreadyExists {
                    what: "server",
                    id: rec.id.clone(),
                });
            }
            if let Credential::Inline(secret) = &rec.bmc.credential {
                rec.bmc.credential = self.store_secret(&rec.id, secret)?;
            }
            // In the map at once, so a second enrolment of the id is refused
            // while this one is being written.
            insert_slot(&mut inner, rec.clone(), bmc.clone());
            self.store.write(vec![
                Write::PutServer(rec.clone()),
                self.event(rec, EventKind::ServerEnrolled, "api"),
            ])
        };
        if let Err(e) = ticket.durable().await {
            self.lock().servers.remove(&rec.id);
            return Err(e.into());
        }
        Ok(())
    }

    pub fn get_server(&self, caller: &Caller, id: &str) -> Result<ServerRecord> {
        let rec = self.record(id)?;
        self.settings
            .policy
            .check(caller, Op::Read, Some(&rec.project_id))?;
        Ok(rec)
    }

    pub(super) fn record(&self, id: &str) -> Result<ServerRecord> {
        self.lock()
            .servers
            .get(id)
            .map(|s| s.rec.clone())
            .ok_or_else(|| not_found_server(id))
    }

    /// A page of the servers the caller may read, ordered by id, after `after`.
    pub fn list_servers(
        &self,
        caller: &Caller,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<ServerRecord>, Option<String>) {
        let inner = self.lock();
        let mut visible: Vec<&ServerRecord> = inner
            .servers
            .values()
            .map(|s| &s.rec)
            .filter(|r| after.is_none_or(|a| r.id.as_str() > a))
            .filter(|r| {
                self.settings
                    .policy
                    .check(caller, Op::Read, Some(&r.project_id))
                    .is_ok()
            })
            .collect();
        visible.sort_by(|a, b| a.id.cmp(&b.id));
        let more = visible.len() > limit;
        let page: Vec<ServerRecord> = visible.into_iter().take(limit).cloned().collect();
        let next = if more {
            page.last().map(|r| r.id.clone())
        } else {
            None
        };
        (page, next)
    }

    pub async fn remove_server(&self, caller: &Caller, id: &str) -> Result<()> {
        self.settings.policy.check(caller, Op::Remove, None)?;
        let (slot, ticket) = {
            let mut inner = self.lock();
            let slot = inner.servers.get(id).ok_or_else(|| not_found_server(id))?;
            if slot.rec.source == Source::Config {
                return Err(EngineError::Conflict(format!(
                    "server {id} comes from the config file's static inventory; remove it there"
                )));
            }
            if let Some((running, kind)) = &slot.rec.task {
                return Err(EngineError::Conflict(format!(
                    "server {id} has action {running} ({kind}) in progress"
                )));
            }
            let slot = inner.servers.remove(id).expect("checked above");
            // Under the lock a health read sets gauges under: none come back.
            self.settings.metrics.forget_server(id);
            let ticket = self.store.write(vec![
                Write::DeleteServer(id.to_string()),
                self.event(&slot.rec, EventKind::ServerRemoved, "api"),
            ]);
            (slot, ticket)
        };
        ticket.durable().await?;
        slot.bmc.close().await;
        if let Credential::Stored(_) = &slot.rec.bmc.credential {
            let _ = std::fs::remove_file(self.secret_path(&slot.rec.bmc.credential));
        }
        info!(server_id = %id, "server removed");
        Ok(())
    }

    pub fn server_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.lock().servers.keys().cloned().collect();
        ids.sort();
        ids
    }
}

/// Puts a server in the map, with the lock of its BMC (shared by every server
/// behind the same BMC endpoint).
pub(super) fn insert_slot(inner: &mut Inner, rec: ServerRecord, bmc: SharedBmc) {
    inner
        .bmc_locks
        .entry(rec.bmc.key())
        .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())));
    inner.servers.insert(
        rec.id.clone(),
        Slot {
            rec,
            bmc,
            running: None,
            failures: 0,
            checked: false,
            setup_problem: None,
        },
    );
}

pub(super) fn new_record(
    id: &str,
    project: &str,
    bmc: BmcRecord,
    source: Source,
    power: Option<Power>,
) -> ServerRecord {
    let power: PowerState = power.map(Into::into).unwrap_or(PowerState::Unknown);
    ServerRecord {
        id: id.to_string(),
        project_id: project.to_string(),
        bmc,
        power,
        power_observed_at: None,
        vm_state: vm_state_for(power),
        task: None,
        locked: false,
        locked_by_admin: false,
        bmc_error: None,
        source,
        created_at: now_ms(),
        identity: None,
        identity_read_at: None,
        identity_error: None,
    }
}
