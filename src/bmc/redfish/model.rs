//! Serde models of the parts of the DMTF Redfish schemas the driver touches:
//! one struct per resource, every field optional unless the schema requires it,
//! unknown fields ignored, and enums that keep a vendor's extra value in
//! `Other(String)` instead of failing to parse.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Declares a Redfish string enum with an `Other(String)` fallback.
macro_rules! redfish_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($variant,)+
            /// A value this build does not know (a newer schema or a vendor's own).
            Other(String),
        }

        impl $name {
            /// The value as it appears on the wire.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $wire,)+
                    $name::Other(s) => s.as_str(),
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $($wire => $name::$variant,)+
                    other => $name::Other(other.to_string()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Ok($name::from(s.as_str()))
            }
        }
    };
}

redfish_enum! {
    /// `Resource.PowerState`.
    PowerState {
        On = "On",
        Off = "Off",
        PoweringOn = "PoweringOn",
        PoweringOff = "PoweringOff",
        Paused = "Paused",
    }
}

redfish_enum! {
    /// `Resource.ResetType`, the parameter of `#ComputerSystem.Reset`.
    ResetType {
        On = "On",
        ForceOff = "ForceOff",
        GracefulShutdown = "GracefulShutdown",
        GracefulRestart = "GracefulRestart",
        ForceRestart = "ForceRestart",
        Nmi = "Nmi",
        ForceOn = "ForceOn",
        PushPowerButton = "PushPowerButton",
        PowerCycle = "PowerCycle",
        FullPowerCycle = "FullPowerCycle",
        Suspend = "Suspend",
        Pause = "Pause",
        Resume = "Resume",
    }
}

redfish_enum! {
    /// `ComputerSystem.BootSource` (`BootSourceOverrideTarget`).
    BootSource {
        None = "None",
        Pxe = "Pxe",
        Floppy = "Floppy",
        Cd = "Cd",
        Usb = "Usb",
        Hdd = "Hdd",
        BiosSetup = "BiosSetup",
        Utilities = "Utilities",
        Diags = "Diags",
        UefiShell = "UefiShell",
        UefiTarget = "UefiTarget",
        SdCard = "SDCard",
        UefiHttp = "UefiHttp",
        RemoteDrive = "RemoteDrive",
        UefiBootNext = "UefiBootNext",
        Recovery = "Recovery",
    }
}

redfish_enum! {
    /// `ComputerSystem.BootSourceOverrideEnabled`.
    BootSourceOverrideEnabled {
        Disabled = "Disabled",
        Once = "Once",
        Continuous = "Continuous",
    }
}

redfish_enum! {
    /// `ComputerSystem.BootSourceOverrideMode`.
    BootSourceOverrideMode {
        Legacy = "Legacy",
        Uefi = "UEFI",
    }
}

redfish_enum! {
    /// `VirtualMedia.MediaType`.
    MediaType {
        Cd = "CD",
        Dvd = "DVD",
        Floppy = "Floppy",
        UsbStick = "USBStick",
    }
}

redfish_enum! {
    /// `Task.TaskState`.
    TaskState {
        New = "New",
        Starting = "Starting",
        Running = "Running",
        Suspended = "Suspended",
        Interrupted = "Interrupted",
        Pending = "Pending",
        Stopping = "Stopping",
        Completed = "Completed",
        Killed = "Killed",
        Exception = "Exception",
        Service = "Service",
        Cancelling = "Cancelling",
        Cancelled = "Cancelled",
    }
}

redfish_enum! {
    /// `Resource.Health` (also `Task.TaskStatus`, `Message.MessageSeverity`).
    Health {
        Ok = "OK",
        Warning = "Warning",
        Critical = "Critical",
    }
}

impl TaskState {
    /// The task has ended, one way or the other.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            TaskState::Completed | TaskState::Killed | TaskState::Exception | TaskState::Cancelled
        )
    }
}

/// A link: `{"@odata.id": "/redfish/v1/..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Link {
    #[serde(rename = "@odata.id")]
    pub odata_id: String,
}

/// `ServiceRoot` (`/redfish/v1/`), readable without authentication.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceRoot {
    pub redfish_version: Option<String>,
    pub systems: Option<Link>,
    pub managers: Option<Link>,
    pub chassis: Option<Link>,
    pub session_service: Option<Link>,
    pub links: Option<ServiceRootLinks>,
    /// Which query parameters the service supports (ServiceRoot v1.3+).
    #[serde(default, deserialize_with = "lenient")]
    pub protocol_features_supported: Option<ProtocolFeatures>,
}

/// `ServiceRoot.ProtocolFeaturesSupported`: only `$expand` matters here.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ProtocolFeatures {
    #[serde(default, deserialize_with = "lenient")]
    pub expand_query: Option<ExpandQuery>,
}

/// `ProtocolFeaturesSupported.ExpandQuery`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExpandQuery {
    /// `$expand=*` (every hyperlink).
    pub expand_all: Option<bool>,
    /// `$expand=.` (hyperlinks outside `Links`, which a collection's
    /// members are).
    pub no_links: Option<bool>,
}

impl ServiceRoot {
    /// The `$expand` query that inlines a collection's members, when the
    /// service says it supports one.
    pub fn expand_members_query(&self) -> Option<&'static str> {
        let q = self
            .protocol_features_supported
            .as_ref()?
            .expand_query
            .as_ref()?;
        if q.no_links == Some(true) {
            Some("$expand=.")
        } else if q.expand_all == Some(true) {
            Some("$expand=*")
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceRootLinks {
    pub sessions: Option<Link>,
}

impl ServiceRoot {
    /// Where to POST a new session: `Links.Sessions` (required by the spec
    /// when sessions exist), else the session service's `Sessions`.
    pub fn sessions_link(&self) -> Option<&str> {
        self.links
            .as_ref()
            .and_then(|l| l.sessions.as_ref())
            .map(|l| l.odata_id.as_str())
    }
}

/// Any resource collection: only the members matter here.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Collection {
    #[serde(default)]
    pub members: Vec<Link>,
}

/// `ComputerSystem`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ComputerSystem {
    #[serde(rename = "@odata.id")]
    pub odata_id: Option<String>,
    #[serde(rename = "@odata.etag")]
    pub odata_etag: Option<String>,
    #[serde(default)]
    pub id: String,
    pub name: Option<String>,
    pub power_state: Option<PowerState>,
    pub boot: Option<Boot>,
    pub actions: Option<SystemActions>,
    pub virtual_media: Option<Link>,
    pub links: Option<SystemLinks>,
    /// When the system was last reset or rebooted (ComputerSystem v1.12+).
    #[serde(default, deserialize_with = "lenient_string")]
    pub last_reset_time: Option<String>,
    /// The last boot progress state the host reported (v1.13+).
    #[serde(default, deserialize_with = "lenient")]
    pub boot_progress: Option<BootProgress>,
}

/// `ComputerSystem.BootProgress`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct BootProgress {
    /// `BootProgressTypes`: "None", "PrimaryProcessorInitializationStarted",
    /// "SetupEntered", "OSBootStarted", "OSRunning", "OEM", ...
    #[serde(default, deserialize_with = "lenient_string")]
    pub last_state: Option<String>,
    /// When `LastState` was last updated (v1.13+).
    #[serde(default, deserialize_with = "lenient_string")]
    pub last_state_time: Option<String>,
    /// The vendor's name of the state when `LastState` is "OEM".
    #[serde(default, deserialize_with = "lenient_string")]
    pub oem_last_state: Option<String>,
}

/// A string property that a firmware may send as `null` or with another type:
/// anything but a string reads as absent, so that reading the power state never
/// fails over a property that only describes.
fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Some(s),
        _ => None,
    })
}

/// An object property that reads as absent when it does not parse.
fn lenient<'de, D: Deserializer<'de>, T: serde::de::DeserializeOwned>(
    d: D,
) -> Result<Option<T>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(serde_json::from_value(v).ok())
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SystemLinks {
    #[serde(default)]
    pub managed_by: Vec<Link>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct SystemActions {
    #[serde(rename = "#ComputerSystem.Reset")]
    pub reset: Option<ResetAction>,
}

/// `#ComputerSystem.Reset`: its target and, inline or via an ActionInfo
/// resource, the reset types the system allows.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ResetAction {
    pub target: String,
    #[serde(rename = "ResetType@Redfish.AllowableValues")]
    pub allowable_values: Option<Vec<ResetType>>,
    #[serde(rename = "@Redfish.ActionInfo")]
    pub action_info: Option<String>,
}

/// `ActionInfo`: the parameters of an action and their allowable values.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ActionInfo {
    #[serde(default)]
    pub parameters: Vec<ActionParameter>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ActionParameter {
    pub name: String,
    pub required: Option<bool>,
    pub allowable_values: Option<Vec<String>>,
}

impl ActionInfo {
    /// The allowable values of the parameter `name`, if the BMC lists any.
    pub fn allowable(&self, name: &str) -> Option<&[String]> {
        self.parameters
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| p.allowable_values.as_deref())
    }
}

/// `ComputerSystem.Boot`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Boot {
    #[serde(rename = "BootSourceOverrideTarget")]
    pub target: Option<BootSource>,
    #[serde(rename = "BootSourceOverrideTarget@Redfish.AllowableValues")]
    pub target_allowable: Option<Vec<BootSource>>,
    #[serde(rename = "BootSourceOverrideEnabled")]
    pub enabled: Option<BootSourceOverrideEnabled>,
    #[serde(rename = "BootSourceOverrideEnabled@Redfish.AllowableValues")]
    pub enabled_allowable: Option<Vec<BootSourceOverrideEnabled>>,
    #[serde(rename = "BootSourceOverrideMode")]
    pub mode: Option<BootSourceOverrideMode>,
    #[serde(rename = "BootSourceOverrideMode@Redfish.AllowableValues")]
    pub mode_allowable: Option<Vec<BootSourceOverrideMode>>,
}

/// The body of the PATCH that sets a boot override.
#[derive(Debug, Clone, Serialize)]
pub struct BootPatch {
    #[serde(rename = "Boot")]
    pub boot: BootOverride,
}

#[derive(Debug, Clone, Serialize)]
pub struct BootOverride {
    #[serde(rename = "BootSourceOverrideTarget")]
    pub target: BootSource,
    #[serde(rename = "BootSourceOverrideEnabled")]
    pub enabled: BootSourceOverrideEnabled,
}

/// The body of `#ComputerSystem.Reset`.
#[derive(Debug, Clone, Serialize)]
pub struct ResetRequest {
    #[serde(rename = "ResetType")]
    pub reset_type: ResetType,
}

/// `SessionService`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SessionService {
    pub service_enabled: Option<bool>,
    pub sessions: Option<Link>,
}

/// `Session`, as the BMC returns it (never with the password).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Session {
    #[serde(rename = "@odata.id")]
    pub odata_id: Option<String>,
    pub id: Option<String>,
    pub user_name: Option<String>,
}

/// `Manager`: only its virtual media link matters here.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Manager {
    #[serde(default)]
    pub id: String,
    pub virtual_media: Option<Link>,
}

/// `VirtualMedia`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VirtualMedia {
    #[serde(rename = "@odata.id")]
    pub odata_id: Option<String>,
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub media_types: Vec<MediaType>,
    pub image: Option<String>,
    pub inserted: Option<bool>,
    pub actions: Option<VirtualMediaActions>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct VirtualMediaActions {
    #[serde(rename = "#VirtualMedia.InsertMedia")]
    pub insert_media: Option<ActionTarget>,
    #[serde(rename = "#VirtualMedia.EjectMedia")]
    pub eject_media: Option<ActionTarget>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ActionTarget {
    pub target: String,
}

impl VirtualMedia {
    /// A CD/DVD drive, the kind an installer image goes into.
    pub fn is_optical(&self) -> bool {
        self.media_types
            .iter()
            .any(|m| matches!(m, MediaType::Cd | MediaType::Dvd))
            || (self.media_types.is_empty() && self.id.to_ascii_lowercase().contains("cd"))
    }
}

/// The body of `#VirtualMedia.InsertMedia`.
#[derive(Debug, Clone, Serialize)]
pub struct InsertMediaRequest<'a> {
    #[serde(rename = "Image")]
    pub image: &'a str,
    #[serde(rename = "Inserted")]
    pub inserted: bool,
    #[serde(rename = "WriteProtected")]
    pub write_protected: bool,
}

/// `Task`, as returned by a task monitor or the task resource.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Task {
    #[serde(rename = "@odata.id")]
    pub odata_id: Option<String>,
    pub id: Option<String>,
    pub task_state: Option<TaskState>,
    pub task_status: Option<Health>,
    pub task_monitor: Option<String>,
    pub percent_complete: Option<u32>,
    #[serde(default)]
    pub messages: Vec<Message>,
}

/// `Message`, in error bodies (`@Message.ExtendedInfo`) and tasks.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Message {
    pub message_id: Option<String>,
    pub message: Option<String>,
    #[serde(default)]
    pub message_args: Vec<serde_json::Value>,
    pub severity: Option<String>,
    pub message_severity: Option<Health>,
    pub resolution: Option<String>,
}

/// The Redfish error body: `{"error": {"code", "message", "@Message.ExtendedInfo"}}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ErrorDetail {
    pub code: Option<String>,
    pub message: Option<String>,
    #[serde(rename = "@Message.ExtendedInfo", default)]
    pub extended_info: Vec<Message>,
}

/// Joins the human-readable texts of messages ("; "), falling back to ids.
pub fn messages_text(messages: &[Message]) -> Option<String> {
    let texts: Vec<&str> = messages
        .iter()
        .filter_map(|m| {
            m.message
                .as_deref()
                .filter(|s| !s.trim().is_empty())
                .or(m.message_id.as_deref())
        })
        .collect();
    (!texts.is_empty()).then(|| texts.join("; "))
}

impl ErrorBody {
    /// What the BMC said, for an operator: the ExtendedInfo messages when
    /// they carry text, else the top-level message, else the code.
    pub fn text(&self) -> Option<String> {
        let e = &self.error;
        let extended: Vec<&str> = e
            .extended_info
            .iter()
            .filter_map(|m| m.message.as_deref().filter(|s| !s.trim().is_empty()))
            .collect();
        if !extended.is_empty() {
            return Some(extended.join("; "));
        }
        e.message
            .clone()
            .filter(|s| !s.trim().is_empty())
            .or_else(|| e.code.clone())
            .or_else(|| messages_text(&e.extended_info))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_enum_values_are_kept() {
        let v: Vec<ResetType> = serde_json::from_str(r#"["On","OemHalt"]"#).unwrap();
        assert_eq!(v, vec![ResetType::On, ResetType::Other("OemHalt".into())]);
        assert_eq!(v[1].as_str(), "OemHalt");
    }

    #[test]
    fn enums_serialize_to_wire_names() {
        let body = serde_json::to_string(&BootPatch {
            boot: BootOverride {
                target: BootSource::SdCard,
                enabled: BootSourceOverrideEnabled::Once,
            },
        })
        .unwrap();
        assert_eq!(
            body,
            r#"{"Boot":{"BootSourceOverrideTarget":"SDCard","BootSourceOverrideEnabled":"Once"}}"#
        );
    }

    #[test]
    fn error_text_prefers_extended_info_then_message() {
        let b: ErrorBody = serde_json::from_str(
            r#"{"error":{"code":"Base.1.0.GeneralError","message":"Power state PowerCycle is not supported",
            "@Message.ExtendedInfo":[{"MessageId":"Base.1.0.GeneralError"}]}}"#,
        )
        .unwrap();
        assert_eq!(
            b.text().as_deref(),
            Some("Power state PowerCycle is not supported")
        );
    }
}
