//! Finding our way around one BMC's resource tree, from the service root,
//! without assuming any path: Systems → the system → its Reset action and
//! allowable values, its boot override values, and a CD/DVD virtual media.

use tracing::{info, warn};

use super::client::{AuthMode, Client};
use super::mapping;
use super::model::{
    ActionInfo, BootSource, Collection, ComputerSystem, Manager, ResetType, ServiceRoot,
    SessionService, VirtualMedia,
};
use super::options::{AuthChoice, RedfishOptions};
use crate::bmc::BmcError;

/// What discovery found, cached for the driver's lifetime.
#[derive(Debug, Clone)]
pub struct Discovered {
    /// The system resource, e.g. `/redfish/v1/Systems/System.Embedded.1`.
    pub system: String,
    pub system_id: String,
    /// The Reset action, or why the system has none usable.
    pub reset: Result<ResetInfo, BmcError>,
    /// `BootSourceOverrideTarget@Redfish.AllowableValues`, when listed.
    pub boot_allowed: Option<Vec<BootSource>>,
    /// A CD/DVD virtual media resource, when the BMC has one.
    pub virtual_media: Option<MediaInfo>,
    /// The system shows `LastResetTime` or `BootProgress`.
    pub restart_evidence: bool,
    /// The service root's Managers and Chassis collections, where the
    /// system's own links do not name its manager or chassis.
    pub managers: Option<String>,
    pub chassis: Option<String>,
    /// The `$expand` query that inlines a collection's members, when the
    /// service root advertises one (`ProtocolFeaturesSupported`).
    pub expand: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ResetInfo {
    pub target: String,
    /// Allowable reset types; `None` when the BMC lists none.
    pub allowed: Option<Vec<ResetType>>,
}

#[derive(Debug, Clone)]
pub struct MediaInfo {
    pub path: String,
    pub insert_target: Option<String>,
    pub eject_target: Option<String>,
}

pub async fn discover(client: &Client, opts: &RedfishOptions) -> Result<Discovered, BmcError> {
    let root_path = "/redfish/v1/";
    let root: ServiceRoot = {
        let mut req = super::client::Req::get(root_path);
        req.authenticated = false;
        match client.send(req).await {
            Ok(reply) => reply.json("service root")?,
            // The spec wants the root readable without credentials; some
            // BMCs disagree. Read it with basic auth then.
            Err(BmcError::Auth(_)) => {
                client.set_auth_mode(AuthMode::Basic).await;
                client.get_json(root_path).await?
            }
            Err(e) => return Err(e),
        }
    };
    client
        .set_auth_mode(choose_auth(client, &root, opts.auth).await?)
        .await;

    let systems = root.systems.as_ref().ok_or_else(|| {
        BmcError::Unsupported("power control: the service root lists no Systems".into())
    })?;
    let members: Collection = client.get_json(&systems.odata_id).await?;
    let (system_path, system) = choose_system(client, &members, opts.system_id.as_deref()).await?;

    let reset = match system.actions.as_ref().and_then(|a| a.reset.as_ref()) {
        None => Err(no_reset(client, &members, &system_path, &system, opts).await),
        Some(action) => {
            let allowed = match (&action.allowable_values, &action.action_info) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(info)) => match client.get_json::<ActionInfo>(info).await {
                    Ok(ai) => ai.allowable("ResetType").map(mapping::reset_types),
                    Err(e) => {
                        warn!(server_id = client.server_id(), bmc = client.bmc(), system = %system_path, action_info = %info, error = %e,
                            "cannot read the Reset ActionInfo; assuming the standard reset types");
                        None
                    }
                },
                (None, None) => None,
            };
            Ok(ResetInfo {
                target: action.target.clone(),
                allowed,
            })
        }
    };
    let boot_allowed = system
        .boot
        .as_ref()
        .and_then(|b| b.target_allowable.clone());
    let virtual_media = find_virtual_media(client, &system).await;
    let restart_evidence = mapping::has_restart_evidence(&system);
    info!(server_id = client.server_id(), bmc = client.bmc(), system = %system_path, reset = ?reset.as_ref().map(|r| &r.allowed),
        virtual_media = ?virtual_media.as_ref().map(|m| &m.path), restart_evidence, "Redfish system discovered");
    Ok(Discovered {
        system: system_path,
        system_id: system.id,
        reset,
        boot_allowed,
        virtual_media,
        restart_evidence,
        managers: root.managers.as_ref().map(|l| l.odata_id.clone()),
        chassis: root.chassis.as_ref().map(|l| l.odata_id.clone()),
        expand: root.expand_members_query().map(str::to_string),
    })
}

async fn choose_auth(
    client: &Client,
    root: &ServiceRoot,
    choice: AuthChoice,
) -> Result<AuthMode, BmcError> {
    if choice == AuthChoice::Basic {
        return Ok(AuthMode::Basic);
    }
    let sessions = match (root.sessions_link(), &root.session_service) {
        (Some(s), _) => Some(s.to_string()),
        (None, Some(svc)) => {
            // Reading the SessionService needs credentials: basic until then.
            client.set_auth_mode(AuthMode::Basic).await;
            client
                .get_json::<SessionService>(&svc.odata_id)
                .await
                .ok()
                .and_then(|s| s.sessions.map(|l| l.odata_id))
        }
        (None, None) => None,
    };
    match (sessions, choice) {
        (Some(sessions), choice) => Ok(AuthMode::Session {
            sessions,
            fallback: choice == AuthChoice::Auto,
        }),
        (None, AuthChoice::Session) => Err(BmcError::Unsupported(
            "session authentication (auth = \"session\"): the service root advertises no \
             SessionService; use auth = \"basic\""
                .into(),
        )),
        (None, _) => Ok(AuthMode::Basic),
    }
}

fn last_segment(path: &str) -> &str {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path)
}

fn has_reset(sys: &ComputerSystem) -> bool {
    sys.actions.as_ref().is_some_and(|a| a.reset.is_some())
}

/// The system to control, and its resource as read. With several systems and
/// no `system_id`, the only one with a `#ComputerSystem.Reset` action is taken
/// (a multi-node chassis or a DPU lists systems that cannot be powered on their
/// own); when that does not single one out, the operator must say which.
async fn choose_system(
    client: &Client,
    members: &Collection,
    wanted: Option<&str>,
) -> Result<(String, ComputerSystem), BmcError> {
    let paths: Vec<&str> = members
        .members
        .iter()
        .map(|l| l.odata_id.as_str())
        .collect();
    let ids: Vec<&str> = paths.iter().map(|p| last_segment(p)).collect();
    let read = |p: &str| {
        let p = p.to_string();
        async move {
            let sys: ComputerSystem = client.get_json(&p).await?;
            Ok::<_, BmcError>((p, sys))
        }
    };
    match (wanted, paths.as_slice()) {
        (_, []) => Err(BmcError::Unsupported(
            "power control: the Systems collection is empty".into(),
        )),
        (None, [only]) => read(only).await,
        (None, _) => {
            let mut with_reset = Vec::new();
            let mut without = Vec::new();
            for p in &paths {
                let (path, sys) = read(p).await?;
                if has_reset(&sys) {
                    with_reset.push((path, sys));
                } else {
                    without.push(last_segment(p).to_string());
                }
            }
            if with_reset.len() == 1 {
                let (path, sys) = with_reset.remove(0);
                info!(server_id = %client.server_id(), bmc = %client.bmc(), system = %path,
                    others = %without.join(", "),
                    "several systems and no system_id: using the only one with a Reset action");
                return Ok((path, sys));
            }
            let resettable: Vec<&str> = with_reset.iter().map(|(p, _)| last_segment(p)).collect();
            Err(BmcError::Config(if resettable.is_empty() {
                format!(
                    "this BMC has {} systems ({}) and none has a #ComputerSystem.Reset action; \
                     set the `system_id` option to the one this server is (its power can then \
                     be read, not controlled)",
                    paths.len(),
                    ids.join(", ")
                )
            } else {
                format!(
                    "this BMC has {} systems with a #ComputerSystem.Reset action ({}){}; set the \
                     `system_id` option to the one this server is",
                    resettable.len(),
                    resettable.join(", "),
                    if without.is_empty() {
                        String::new()
                    } else {
                        format!(" and {} without ({})", without.len(), without.join(", "))
                    }
                )
            }))
        }
        (Some(id), _) => {
            if let Some(p) = paths.iter().find(|p| last_segment(p) == id) {
                return read(p).await;
            }
            // The id in the path may differ from the resource's Id property.
            for p in &paths {
                if let Ok((path, sys)) = read(p).await {
                    if sys.id == id {
                        return Ok((path, sys));
                    }
                }
            }
            Err(BmcError::Config(format!(
                "`system_id` {id:?} names no system on this BMC (it has: {})",
                ids.join(", ")
            )))
        }
    }
}

/// Why the chosen system cannot be power-controlled. When the operator chose
/// it (`system_id`) and another system on the BMC has a Reset action, that is
/// a configuration question and the answer names them; otherwise the BMC does
/// not offer power control of this system.
async fn no_reset(
    client: &Client,
    members: &Collection,
    path: &str,
    system: &ComputerSystem,
    opts: &RedfishOptions,
) -> BmcError {
    let what = format!(
        "power control of system {:?}: it has no #ComputerSystem.Reset action, so it cannot \
         be powered on, off or reset through Redfish (its power state can still be read)",
        system.id
    );
    if opts.system_id.is_none() {
        return BmcError::Unsupported(what);
    }
    let mut others = Vec::new();
    for link in members.members.iter().filter(|l| l.odata_id != path) {
        if let Ok(sys) = client.get_json::<ComputerSystem>(&link.odata_id).await {
            if has_reset(&sys) {
                others.push(last_segment(&link.odata_id).to_string());
            }
        }
    }
    if others.is_empty() {
        BmcError::Unsupported(what)
    } else {
        BmcError::Config(format!(
            "`system_id` {:?} names a system without a #ComputerSystem.Reset action; the \
             systems on this BMC that have one: {}",
            opts.system_id.as_deref().unwrap_or_default(),
            others.join(", ")
        ))
    }
}

/// A CD/DVD virtual media under the system, else under its managers.
async fn find_virtual_media(client: &Client, system: &ComputerSystem) -> Option<MediaInfo> {
    if let Some(link) = &system.virtual_media {
        if let Some(m) = optical_in(client, &link.odata_id).await {
            return Some(m);
        }
    }
    for mgr in system.links.iter().flat_map(|l| &l.managed_by) {
        let Ok(manager) = client.get_json::<Manager>(&mgr.odata_id).await else {
            continue;
        };
        if let Some(link) = &manager.virtual_media {
            if let Some(m) = optical_in(client, &link.odata_id).await {
                return Some(m);
            }
        }
    }
    None
}

async fn optical_in(client: &Client, collection: &str) -> Option<MediaInfo> {
    let members: Collection = client.get_json(collection).await.ok()?;
    for link in &members.members {
        let Ok(vm) = client.get_json::<VirtualMedia>(&link.odata_id).await else {
            continue;
        };
        if vm.is_optical() {
            let actions = vm.actions.as_ref();
            return Some(MediaInfo {
                path: link.odata_id.clone(),
                insert_target: actions
                    .and_then(|a| a.insert_media.as_ref())
                    .map(|t| t.target.clone()),
                eject_target: actions
                    .and_then(|a| a.eject_media.as_ref())
                    .map(|t| t.target.clone()),
            });
        }
    }
    None
}
