//! rackctl: the operator's command line for a rack-agent, over the same gRPC API
//! the control plane uses.
//!
//! Exit codes: 0 success; 1 the agent refused or failed the call (gRPC status
//! and message on stderr); 2 usage error; 3 the agent cannot be reached;
//! 4 with --wait, the action ended FAILED or SUPERSEDED.

use std::io::Read;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand, ValueEnum};
use rack_agent::proto as pb;
use rack_agent::proto::rack_agent_client::RackAgentClient;
use serde_json::{json, Value};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::Request;

#[derive(Parser)]
#[command(name = "rackctl", version, about = "Operate a rack-agent")]
struct Cli {
    /// The agent's gRPC endpoint.
    #[arg(
        long,
        global = true,
        env = "RACKCTL_ENDPOINT",
        default_value = "http://127.0.0.1:50051"
    )]
    endpoint: String,
    /// Output format.
    #[arg(long, short, global = true, value_enum, default_value = "human")]
    output: Output,
    /// Caller id sent to the agent.
    #[arg(
        long,
        global = true,
        env = "RACKCTL_CALLER",
        default_value = "operator"
    )]
    caller: String,
    /// Caller roles, comma-separated.
    #[arg(long, global = true, env = "RACKCTL_ROLES", default_value = "admin")]
    roles: String,
    /// Project the caller acts for.
    #[arg(long, global = true, env = "RACKCTL_PROJECT", default_value = "")]
    project: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Human,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// List servers.
    Servers,
    /// Show one server (with its BMC's identity as last read).
    Show {
        server: String,
        /// Read the BMC's identity again now.
        #[arg(long)]
        refresh_identity: bool,
    },
    /// Read every sensor of a server's BMC now (temperatures, fans,
    /// voltages, power draw), with thresholds and status.
    Health { server: String },
    /// The BMC's event log (IPMI SEL, Redfish log entries), oldest first.
    Events {
        server: String,
        /// Only entries logged since then: an RFC 3339 time
        /// (2026-11-26T04:00:00Z) or a duration ago (10m, 2h, 1day).
        #[arg(long, value_parser = parse_since)]
        since: Option<SystemTime>,
        /// At most this many, the newest (default 100, at most 1000).
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
    /// Enrol a server.
    Enroll {
        id: String,
        #[arg(long)]
        project: String,
        #[arg(long, value_parser = ["ipmi", "redfish"])]
        protocol: String,
        #[arg(long)]
        address: String,
        /// Default: 623 for IPMI, 443 for Redfish.
        #[arg(long, default_value_t = 0)]
        port: u32,
        #[arg(long)]
        username: String,
        /// Name of a password file in the agent's credentials directory.
        #[arg(long, conflicts_with = "password_stdin")]
        password_file: Option<String>,
        /// Read the password from standard input (kept in the agent's database).
        #[arg(long)]
        password_stdin: bool,
        /// Driver option, KEY=VALUE (repeatable).
        #[arg(long = "option", value_parser = parse_kv)]
        options: Vec<(String, String)>,
        /// Store it even if the BMC does not answer now.
        #[arg(long)]
        skip_verify: bool,
    },
    /// Remove a server.
    Remove { server: String },
    /// Reboot (SOFT unless --hard).
    Reboot {
        server: String,
        #[arg(long)]
        hard: bool,
        #[command(flatten)]
        opts: ActionOpts,
    },
    /// Power on.
    Start {
        server: String,
        #[command(flatten)]
        opts: ActionOpts,
    },
    /// Power off (graceful unless --force).
    Stop {
        server: String,
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        opts: ActionOpts,
    },
    /// Boot once from PXE or an image, and power-cycle.
    Reinstall {
        server: String,
        #[arg(
            long,
            conflicts_with = "virtual_media",
            required_unless_present = "virtual_media"
        )]
        pxe: bool,
        #[arg(long)]
        virtual_media: Option<String>,
        #[command(flatten)]
        opts: ActionOpts,
    },
    /// Set the recorded state (admin; no BMC traffic).
    ResetState {
        server: String,
        #[arg(long, value_parser = ["active", "error"])]
        state: String,
        #[command(flatten)]
        opts: ActionOpts,
    },
    /// Lock a server against non-admin actions.
    Lock {
        server: String,
        #[command(flatten)]
        opts: ActionOpts,
    },
    /// Unlock a server.
    Unlock {
        server: String,
        #[command(flatten)]
        opts: ActionOpts,
    },
    /// A server's actions, newest first.
    Actions {
        server: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Show one action (--watch: follow it until it ends).
    Action {
        id: String,
        #[arg(long)]
        watch: bool,
    },
    /// Stream power-state and task changes.
    Watch {
        /// Servers to follow (default: all).
        servers: Vec<String>,
        /// Resume after this event number.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Exit after this many events.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Power state (cached; --refresh reads the BMC now).
    Power {
        server: String,
        #[arg(long)]
        refresh: bool,
    },
    /// Power states of many servers in one call (all you may read when none
    /// are named); --refresh reads every BMC now, all at once.
    Sweep {
        servers: Vec<String>,
        #[arg(long)]
        refresh: bool,
    },
}

#[derive(clap::Args)]
struct ActionOpts {
    /// Idempotency key: a retry with the same key returns the same action.
    #[arg(long)]
    request_id: Option<String>,
    /// Wait until the action ends; exit 4 unless it SUCCEEDED.
    #[arg(long)]
    wait: bool,
}

/// `--since`: an RFC 3339 time, or a duration counted back from now.
fn parse_since(s: &str) -> Result<SystemTime, String> {
    use humantime_serde::re::humantime;
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        return Ok(t);
    }
    match humantime::parse_duration(s) {
        Ok(d) => SystemTime::now()
            .checked_sub(d)
            .ok_or_else(|| format!("{s:?} reaches back before 1970")),
        Err(_) => Err(format!(
            "{s:?} is neither an RFC 3339 time (2026-11-26T04:00:00Z) nor a duration ago (10m, 2h)"
        )),
    }
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))
}

enum Failure {
    Status(tonic::Status),
    Connect(String),
    ActionDidNotSucceed,
    Local(String),
}

impl From<tonic::Status> for Failure {
    fn from(s: tonic::Status) -> Self {
        Failure::Status(s)
    }
}

struct Ctl {
    client: RackAgentClient<Channel>,
    caller: String,
    roles: String,
    project: String,
    json: bool,
}

impl Ctl {
    fn req<T>(&self, msg: T) -> Request<T> {
        let mut r = Request::new(msg);
        let md = r.metadata_mut();
        for (k, v) in [
            ("x-rackagent-caller", &self.caller),
            ("x-rackagent-roles", &self.roles),
            ("x-rackagent-project", &self.project),
        ] {
            if let Ok(v) = MetadataValue::try_from(v.as_str()) {
                if !v.is_empty() {
                    md.insert(k, v);
                }
            }
        }
        r
    }

    async fn action_done(&mut self, a: pb::Action, opts: &ActionOpts) -> Result<(), Failure> {
        if !opts.wait {
            self.print_action(&a);
            return Ok(());
        }
        self.follow_action(a.id).await
    }

    async fn follow_action(&mut self, id: String) -> Result<(), Failure> {
        let mut stream = self
            .client
            .watch_action(self.req(pb::WatchActionRequest { id }))
            .await?
            .into_inner();
        let mut last = None;
        while let Some(a) = stream.message().await? {
            if !self.json {
                let step = a
                    .events
                    .last()
                    .map(|e| format!(" {} {}", e.step, short(phase_name(e.phase), "STEP_PHASE_")))
                    .unwrap_or_default();
                eprintln!(
                    "{} {}{step}",
                    a.id,
                    short(state_name(a.state), "ACTION_STATE_")
                );
            }
            last = Some(a);
        }
        let a = last.ok_or_else(|| Failure::Local("the agent sent no action".into()))?;
        self.print_action(&a);
        if a.state == pb::ActionState::Succeeded as i32 {
            Ok(())
        } else {
            Err(Failure::ActionDidNotSucceed)
        }
    }

    fn print_action(&self, a: &pb::Action) {
        if self.json {
            println!("{}", action_json(a));
            return;
        }
        println!("action   {}", a.id);
        println!("server   {}", a.server_id);
        println!("kind     {}", short(kind_name(a.kind), "ACTION_KIND_"));
        println!("state    {}", short(state_name(a.state), "ACTION_STATE_"));
        if !a.params.is_empty() {
            let mut p: Vec<_> = a.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
            p.sort();
            println!("params   {}", p.join(" "));
        }
        if !a.request_id.is_empty() {
            println!("request  {}", a.request_id);
        }
        if let Some(c) = &a.caller {
            println!("caller   {}", c.id);
        }
        println!("created  {}", time(&a.created_at));
        if a.finished_at.is_some() {
            println!("finished {}", time(&a.finished_at));
        }
        if !a.message.is_empty() {
            println!("message  {}", a.message);
        }
        if !a.superseded_by.is_empty() {
            println!("superseded by {}", a.superseded_by);
        }
        for e in &a.events {
            println!(
                "  {}  {:<20} {:<9} {}",
                time(&e.at),
                e.step,
                short(phase_name(e.phase), "STEP_PHASE_"),
                e.detail
            );
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let channel = Channel::from_shared(cli.endpoint.clone())
        .map_err(|e| Failure::Local(format!("endpoint {:?}: {e}", cli.endpoint)))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|e| {
            Failure::Connect(format!("cannot reach the agent at {}: {e}", cli.endpoint))
        })?;
    let mut ctl = Ctl {
        client: RackAgentClient::new(channel),
        caller: cli.caller,
        roles: cli.roles,
        project: cli.project,
        json: cli.output == Output::Json,
    };
    match cli.command {
        Cmd::Servers => {
            let mut servers = Vec::new();
            let mut token = String::new();
            loop {
                let page = ctl
                    .client
                    .list_servers(ctl.req(pb::ListServersRequest {
                        page_size: 200,
                        page_token: token,
                    }))
                    .await?
                    .into_inner();
                servers.extend(page.servers);
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            if ctl.json {
                println!(
                    "{}",
                    Value::Array(servers.iter().map(server_json).collect())
                );
            } else {
                println!(
                    "{:<16} {:<12} {:<8} {:<22} {:<8} {:<11} {:<12} LOCKED",
                    "ID", "PROJECT", "PROTO", "BMC", "POWER", "VM_STATE", "TASK"
                );
                for s in &servers {
                    let bmc = s.bmc.clone().unwrap_or_default();
                    println!(
                        "{:<16} {:<12} {:<8} {:<22} {:<8} {:<11} {:<12} {}",
                        s.id,
                        s.project_id,
                        short(proto_name(bmc.protocol), "BMC_PROTOCOL_"),
                        format!("{}:{}", bmc.address, bmc.port),
                        short(power_name(s.power_state), "POWER_STATE_"),
                        short(vm_name(s.vm_state), "VM_STATE_"),
                        if s.task.is_empty() { "-" } else { &s.task },
                        if s.locked { "yes" } else { "no" }
                    );
                }
            }
        }
        Cmd::Show {
            server,
            refresh_identity,
        } => {
            let s = ctl
                .client
                .get_server(ctl.req(pb::GetServerRequest {
                    id: server,
                    refresh_identity,
                }))
                .await?
                .into_inner();
            if ctl.json {
                println!("{}", server_json(&s));
            } else {
                print_server(&s);
            }
        }
        Cmd::Health { server } => {
            let h = ctl
                .client
                .get_server_health(ctl.req(pb::GetServerHealthRequest { server_id: server }))
                .await?
                .into_inner();
            if ctl.json {
                println!("{}", health_json(&h));
            } else {
                print_health(&h);
            }
        }
        Cmd::Events {
            server,
            since,
            limit,
        } => {
            let since = since.map(|t| {
                let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
                prost_types::Timestamp {
                    seconds: secs as i64,
                    nanos: 0,
                }
            });
            let r = ctl
                .client
                .list_bmc_events(ctl.req(pb::ListBmcEventsRequest {
                    server_id: server,
                    since,
                    limit,
                }))
                .await?
                .into_inner();
            if ctl.json {
                println!(
                    "{}",
                    Value::Array(r.events.iter().map(bmc_event_json).collect())
                );
            } else {
                println!(
                    "{:<8} {:<24} {:<18} {:<16} {:<10} EVENT",
                    "ID", "AT", "TYPE", "SENSOR", "SEVERITY"
                );
                for e in &r.events {
                    println!(
                        "{:<8} {:<24} {:<18} {:<16} {:<10} {}",
                        e.id,
                        time(&e.at),
                        e.sensor_type,
                        e.sensor,
                        if e.severity.is_empty() {
                            "-"
                        } else {
                            &e.severity
                        },
                        bmc_event_words(e)
                    );
                }
            }
        }
        Cmd::Enroll {
            id,
            project,
            protocol,
            address,
            port,
            username,
            password_file,
            password_stdin,
            options,
            skip_verify,
        } => {
            let secret = match (password_file, password_stdin) {
                (Some(f), _) => pb::bmc_endpoint::Secret::PasswordFile(f),
                (None, true) => {
                    let mut s = String::new();
                    std::io::stdin()
                        .read_to_string(&mut s)
                        .map_err(|e| Failure::Local(format!("cannot read the password: {e}")))?;
                    pb::bmc_endpoint::Secret::Password(s.trim_end_matches(['\n', '\r']).to_string())
                }
                (None, false) => {
                    return Err(Failure::Local(
                        "give --password-file NAME or --password-stdin".into(),
                    ))
                }
            };
            let protocol = match protocol.as_str() {
                "ipmi" => pb::BmcProtocol::Ipmi,
                _ => pb::BmcProtocol::Redfish,
            };
            let s = ctl
                .client
                .enroll_server(ctl.req(pb::EnrollServerRequest {
                    id,
                    project_id: project,
                    bmc: Some(pb::BmcEndpoint {
                        protocol: protocol as i32,
                        address,
                        port,
                        username,
                        secret: Some(secret),
                        options: options.into_iter().collect(),
                    }),
                    skip_verify,
                }))
                .await?
                .into_inner();
            if ctl.json {
                println!("{}", server_json(&s));
            } else {
                print_server(&s);
            }
        }
        Cmd::Remove { server } => {
            ctl.client
                .remove_server(ctl.req(pb::RemoveServerRequest { id: server.clone() }))
                .await?;
            if ctl.json {
                println!("{}", json!({"removed": server}));
            } else {
                println!("removed {server}");
            }
        }
        Cmd::Reboot { server, hard, opts } => {
            let t = if hard {
                pb::RebootType::Hard
            } else {
                pb::RebootType::Soft
            };
            let a = ctl
                .client
                .reboot(ctl.req(pb::RebootRequest {
                    server_id: server,
                    r#type: t as i32,
                    request_id: opts.request_id.clone().unwrap_or_default(),
                }))
                .await?
                .into_inner();
            ctl.action_done(a, &opts).await?;
        }
        Cmd::Start { server, opts } => {
            let a = ctl
                .client
                .start(ctl.req(pb::StartRequest {
                    server_id: server,
                    request_id: opts.request_id.clone().unwrap_or_default(),
                }))
                .await?
                .into_inner();
            ctl.action_done(a, &opts).await?;
        }
        Cmd::Stop {
            server,
            force,
            opts,
        } => {
            let a = ctl
                .client
                .stop(ctl.req(pb::StopRequest {
                    server_id: server,
                    force,
                    request_id: opts.request_id.clone().unwrap_or_default(),
                }))
                .await?
                .into_inner();
            ctl.action_done(a, &opts).await?;
        }
        Cmd::Reinstall {
            server,
            pxe,
            virtual_media,
            opts,
        } => {
            let source = match virtual_media {
                Some(url) => pb::reinstall_request::BootSource::VirtualMediaUrl(url),
                None => pb::reinstall_request::BootSource::Pxe(pxe),
            };
            let a = ctl
                .client
                .reinstall(ctl.req(pb::ReinstallRequest {
                    server_id: server,
                    boot_source: Some(source),
                    request_id: opts.request_id.clone().unwrap_or_default(),
                }))
                .await?
                .into_inner();
            ctl.action_done(a, &opts).await?;
        }
        Cmd::ResetState {
            server,
            state,
            opts,
        } => {
            let target = if state == "active" {
                pb::ResetStateTarget::Active
            } else {
                pb::ResetStateTarget::Error
            };
            let a = ctl
                .client
                .reset_state(ctl.req(pb::ResetStateRequest {
                    server_id: server,
                    state: target as i32,
                    request_id: opts.request_id.clone().unwrap_or_default(),
                }))
                .await?
                .into_inner();
            ctl.action_done(a, &opts).await?;
        }
        Cmd::Lock { server, opts } => {
            let a = ctl
                .client
                .lock(ctl.req(pb::LockRequest {
                    server_id: server,
                    request_id: opts.request_id.clone().unwrap_or_default(),
                }))
                .await?
                .into_inner();
            ctl.action_done(a, &opts).await?;
        }
        Cmd::Unlock { server, opts } => {
            let a = ctl
                .client
                .unlock(ctl.req(pb::UnlockRequest {
                    server_id: server,
                    request_id: opts.request_id.clone().unwrap_or_default(),
                }))
                .await?
                .into_inner();
            ctl.action_done(a, &opts).await?;
        }
        Cmd::Actions { server, limit } => {
            let page = ctl
                .client
                .list_actions(ctl.req(pb::ListActionsRequest {
                    server_id: server,
                    page_size: limit,
                    page_token: String::new(),
                }))
                .await?
                .into_inner();
            if ctl.json {
                println!(
                    "{}",
                    Value::Array(page.actions.iter().map(action_json).collect())
                );
            } else {
                println!(
                    "{:<36} {:<12} {:<10} {:<24} MESSAGE",
                    "ACTION", "KIND", "STATE", "CREATED"
                );
                for a in &page.actions {
                    println!(
                        "{:<36} {:<12} {:<10} {:<24} {}",
                        a.id,
                        short(kind_name(a.kind), "ACTION_KIND_"),
                        short(state_name(a.state), "ACTION_STATE_"),
                        time(&a.created_at),
                        a.message
                    );
                }
            }
        }
        Cmd::Action { id, watch } => {
            if watch {
                ctl.follow_action(id).await?;
            } else {
                let a = ctl
                    .client
                    .get_action(ctl.req(pb::GetActionRequest { id }))
                    .await?
                    .into_inner();
                ctl.print_action(&a);
            }
        }
        Cmd::Watch {
            servers,
            after,
            count,
        } => {
            let mut stream = ctl
                .client
                .watch_power_state(ctl.req(pb::WatchPowerStateRequest {
                    server_ids: servers,
                    after_seq: after,
                }))
                .await?
                .into_inner();
            let mut seen = 0u64;
            while let Some(ev) = stream.message().await? {
                if ctl.json {
                    println!("{}", event_json(&ev));
                } else {
                    println!(
                        "#{:<6} {} {:<14} {:<16} power={:<7} vm_state={:<10} task={} cause={}",
                        ev.seq,
                        time(&ev.at),
                        ev.server_id,
                        short(event_name(ev.kind), "EVENT_KIND_"),
                        short(power_name(ev.power_state), "POWER_STATE_"),
                        short(vm_name(ev.vm_state), "VM_STATE_"),
                        if ev.task.is_empty() { "-" } else { &ev.task },
                        ev.cause
                    );
                    for e in &ev.bmc_events {
                        println!(
                            "        bmc log {} {} {}: {}",
                            e.id,
                            time(&e.at),
                            e.sensor_type,
                            bmc_event_words(e)
                        );
                    }
                }
                seen += 1;
                if count.is_some_and(|c| seen >= c) {
                    break;
                }
            }
        }
        Cmd::Power { server, refresh } => {
            let p = ctl
                .client
                .get_power_state(ctl.req(pb::GetPowerStateRequest {
                    server_id: server,
                    refresh,
                }))
                .await?
                .into_inner();
            if ctl.json {
                println!(
                    "{}",
                    json!({
                        "server_id": p.server_id,
                        "power_state": short(power_name(p.power_state), "POWER_STATE_"),
                        "observed_at": time(&p.observed_at),
                        "source": p.source,
                        "vm_state": short(vm_name(p.vm_state), "VM_STATE_"),
                        "task": p.task,
                    })
                );
            } else {
                println!(
                    "{} power={} vm_state={} task={} (observed {}, from {})",
                    p.server_id,
                    short(power_name(p.power_state), "POWER_STATE_"),
                    short(vm_name(p.vm_state), "VM_STATE_"),
                    if p.task.is_empty() { "-" } else { &p.task },
                    time(&p.observed_at),
                    p.source
                );
            }
        }
        Cmd::Sweep { servers, refresh } => {
            let results = ctl
                .client
                .get_power_states(ctl.req(pb::GetPowerStatesRequest {
                    server_ids: servers,
                    refresh,
                }))
                .await?
                .into_inner()
                .results;
            let failed = results.iter().filter(|r| r.status.is_none()).count();
            if ctl.json {
                let rows: Vec<Value> = results
                    .iter()
                    .map(|r| match &r.status {
                        Some(p) => json!({
                            "server_id": r.server_id,
                            "power_state": short(power_name(p.power_state), "POWER_STATE_"),
                            "observed_at": time(&p.observed_at),
                            "source": p.source,
                        }),
                        None => json!({
                            "server_id": r.server_id,
                            "error_code": format!("{:?}", tonic::Code::from(r.error_code)),
                            "error": r.error,
                        }),
                    })
                    .collect();
                println!("{}", Value::Array(rows));
            } else {
                println!(
                    "{:<24} {:<8} {:<6} OBSERVED / ERROR",
                    "SERVER", "POWER", "FROM"
                );
                for r in &results {
                    match &r.status {
                        Some(p) => println!(
                            "{:<24} {:<8} {:<6} {}",
                            r.server_id,
                            short(power_name(p.power_state), "POWER_STATE_"),
                            p.source,
                            time(&p.observed_at)
                        ),
                        None => println!(
                            "{:<24} {:<8} {:<6} {:?}: {}",
                            r.server_id,
                            "-",
                            "-",
                            tonic::Code::from(r.error_code),
                            r.error
                        ),
                    }
                }
            }
            if failed > 0 {
                return Err(Failure::Local(format!(
                    "{failed} of {} server(s) could not be read",
                    results.len()
                )));
            }
        }
    }
    Ok(())
}

fn print_server(s: &pb::Server) {
    let bmc = s.bmc.clone().unwrap_or_default();
    println!("server     {}", s.id);
    println!("project    {}", s.project_id);
    println!(
        "bmc        {} {}:{} user={} credential={}",
        short(proto_name(bmc.protocol), "BMC_PROTOCOL_"),
        bmc.address,
        bmc.port,
        bmc.username,
        bmc.credential_source
    );
    println!(
        "power      {} (observed {})",
        short(power_name(s.power_state), "POWER_STATE_"),
        time(&s.power_observed_at)
    );
    println!("vm_state   {}", short(vm_name(s.vm_state), "VM_STATE_"));
    if !s.task.is_empty() {
        println!("task       {} ({})", s.task, s.current_action_id);
    }
    println!(
        "locked     {}",
        match (s.locked, s.locked_by_admin) {
            (false, _) => "no",
            (true, true) => "yes (by an admin)",
            (true, false) => "yes",
        }
    );
    if !s.bmc_error.is_empty() {
        println!("bmc error  {}", s.bmc_error);
    }
    println!("source     {}", s.source);
    match &s.identity {
        None => println!("identity   (not read yet)"),
        Some(id) => {
            let rows = [
                ("bmc", join(&[&id.bmc_manufacturer, &id.bmc_model])),
                ("firmware", id.firmware_version.clone()),
                ("ipmi", id.ipmi_version.clone()),
                ("system", join(&[&id.system_manufacturer, &id.system_model])),
                ("serial", id.serial_number.clone()),
                ("bios", id.bios_version.clone()),
            ];
            println!("identity   read {}", time(&id.read_at));
            for (k, v) in rows.iter().filter(|(_, v)| !v.is_empty()) {
                println!("  {k:<9}{v}");
            }
            if !id.error.is_empty() {
                println!("  error    {}", id.error);
            }
        }
    }
}

/// The non-empty parts, space-separated.
fn join(parts: &[&String]) -> String {
    parts
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A reading in its unit, or "-" when there is none.
fn reading(v: Option<f64>, unit: &str) -> String {
    match v {
        None => "-".into(),
        Some(v) if unit.is_empty() => format!("{v}"),
        Some(v) => format!("{v} {unit}"),
    }
}

fn print_health(h: &pb::ServerHealth) {
    println!(
        "{} sensors read {} (power {}, inlet {})",
        h.server_id,
        time(&h.read_at),
        reading(h.power_watts, "W"),
        reading(h.inlet_celsius, "degrees C")
    );
    println!(
        "{:<24} {:<12} {:<18} {:<12} THRESHOLDS (lc lw uw uc)",
        "NAME", "KIND", "VALUE", "STATUS"
    );
    for s in &h.sensors {
        let t = |v: Option<f64>| v.map_or("-".to_string(), |v| v.to_string());
        println!(
            "{:<24} {:<12} {:<18} {:<12} {} {} {} {}",
            s.name,
            short(sensor_kind_name(s.kind), "SENSOR_KIND_"),
            reading(s.value, &s.unit),
            short(sensor_status_name(s.status), "SENSOR_STATUS_"),
            t(s.lower_critical),
            t(s.lower_warning),
            t(s.upper_warning),
            t(s.upper_critical)
        );
    }
    if !h.problems.is_empty() {
        println!("problems:");
        for p in &h.problems {
            println!("  {p}");
        }
    }
}

/// What an event-log entry says: its message, else its event and direction.
fn bmc_event_words(e: &pb::BmcEvent) -> String {
    if !e.message.is_empty() {
        e.message.clone()
    } else if e.direction.is_empty() {
        e.event.clone()
    } else {
        format!("{} ({})", e.event, e.direction)
    }
}

fn short(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix)
        .unwrap_or(name)
        .to_ascii_lowercase()
}

/// The wire name of an enum value (`POWER_STATE_ON`), `?` when unknown.
macro_rules! wire_name {
    ($($f:ident: $t:ty),+ $(,)?) => {
        $(fn $f(v: i32) -> &'static str {
            <$t>::try_from(v).map(|e| e.as_str_name()).unwrap_or("?")
        })+
    };
}

wire_name!(
    power_name: pb::PowerState,
    vm_name: pb::VmState,
    kind_name: pb::ActionKind,
    state_name: pb::ActionState,
    phase_name: pb::StepPhase,
    event_name: pb::EventKind,
    proto_name: pb::BmcProtocol,
    sensor_kind_name: pb::SensorKind,
    sensor_status_name: pb::SensorStatus,
);

fn time(t: &Option<prost_types::Timestamp>) -> String {
    match t {
        None => "-".into(),
        Some(t) => {
            let st = UNIX_EPOCH
                + Duration::from_secs(t.seconds.max(0) as u64)
                + Duration::from_nanos(t.nanos.max(0) as u64);
            humantime_serde::re::humantime::format_rfc3339_millis(st).to_string()
        }
    }
}

fn server_json(s: &pb::Server) -> Value {
    let bmc = s.bmc.clone().unwrap_or_default();
    json!({
        "id": s.id,
        "project_id": s.project_id,
        "bmc": {
            "protocol": short(proto_name(bmc.protocol), "BMC_PROTOCOL_"),
            "address": bmc.address,
            "port": bmc.port,
            "username": bmc.username,
            "credential_source": bmc.credential_source,
            "options": bmc.options,
        },
        "power_state": short(power_name(s.power_state), "POWER_STATE_"),
        "power_observed_at": time(&s.power_observed_at),
        "vm_state": short(vm_name(s.vm_state), "VM_STATE_"),
        "task": s.task,
        "current_action_id": s.current_action_id,
        "locked": s.locked,
        "locked_by_admin": s.locked_by_admin,
        "bmc_error": s.bmc_error,
        "source": s.source,
        "identity": s.identity.as_ref().map(|id| json!({
            "bmc_manufacturer": id.bmc_manufacturer,
            "bmc_model": id.bmc_model,
            "firmware_version": id.firmware_version,
            "ipmi_version": id.ipmi_version,
            "system_manufacturer": id.system_manufacturer,
            "system_model": id.system_model,
            "serial_number": id.serial_number,
            "bios_version": id.bios_version,
            "read_at": time(&id.read_at),
            "error": id.error,
        })),
    })
}

fn health_json(h: &pb::ServerHealth) -> Value {
    json!({
        "server_id": h.server_id,
        "read_at": time(&h.read_at),
        "power_watts": h.power_watts,
        "inlet_celsius": h.inlet_celsius,
        "sensors": h.sensors.iter().map(|s| json!({
            "name": s.name,
            "kind": short(sensor_kind_name(s.kind), "SENSOR_KIND_"),
            "value": s.value,
            "unit": s.unit,
            "status": short(sensor_status_name(s.status), "SENSOR_STATUS_"),
            "lower_critical": s.lower_critical,
            "lower_warning": s.lower_warning,
            "upper_warning": s.upper_warning,
            "upper_critical": s.upper_critical,
            "context": s.context,
        })).collect::<Vec<_>>(),
        "problems": h.problems,
    })
}

fn bmc_event_json(e: &pb::BmcEvent) -> Value {
    json!({
        "id": e.id,
        "at": time(&e.at),
        "sensor_type": e.sensor_type,
        "sensor": e.sensor,
        "event": e.event,
        "direction": e.direction,
        "severity": e.severity,
        "message": e.message,
        "raw": e.raw,
    })
}

fn action_json(a: &pb::Action) -> Value {
    json!({
        "id": a.id,
        "server_id": a.server_id,
        "kind": short(kind_name(a.kind), "ACTION_KIND_"),
        "state": short(state_name(a.state), "ACTION_STATE_"),
        "params": a.params,
        "request_id": a.request_id,
        "caller": a.caller.as_ref().map(|c| c.id.clone()),
        "created_at": time(&a.created_at),
        "started_at": time(&a.started_at),
        "finished_at": time(&a.finished_at),
        "message": a.message,
        "superseded_by": a.superseded_by,
        "events": a.events.iter().map(|e| json!({
            "at": time(&e.at),
            "step": e.step,
            "phase": short(phase_name(e.phase), "STEP_PHASE_"),
            "detail": e.detail,
        })).collect::<Vec<_>>(),
    })
}

fn event_json(e: &pb::ServerEvent) -> Value {
    json!({
        "seq": e.seq,
        "at": time(&e.at),
        "server_id": e.server_id,
        "kind": short(event_name(e.kind), "EVENT_KIND_"),
        "power_state": short(power_name(e.power_state), "POWER_STATE_"),
        "vm_state": short(vm_name(e.vm_state), "VM_STATE_"),
        "task": e.task,
        "action_id": e.action_id,
        "cause": e.cause,
        "bmc_events": e.bmc_events.iter().map(bmc_event_json).collect::<Vec<_>>(),
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rackctl: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Status(s)) => {
            eprintln!("rackctl: {:?}: {}", s.code(), s.message());
            ExitCode::from(1)
        }
        Err(Failure::Connect(m)) => {
            eprintln!("rackctl: {m}");
            ExitCode::from(3)
        }
        Err(Failure::ActionDidNotSucceed) => ExitCode::from(4),
        Err(Failure::Local(m)) => {
            eprintln!("rackctl: {m}");
            ExitCode::from(1)
        }
    }
}
