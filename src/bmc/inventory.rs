//! What a BMC tells about its server beyond power: who it is (identity), what
//! its sensors read (health), and what it logged (the event log). One model for
//! both protocols; each driver fills what its BMC offers and leaves the rest
//! empty rather than guessing.

use serde::{Deserialize, Serialize};

/// Who the BMC and its system are. IPMI: Get Device ID (the BMC's
/// manufacturer, product, firmware and IPMI version). Redfish: the Manager
/// (model, firmware) and the System (manufacturer, model, serial, BIOS).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BmcIdentity {
    /// The BMC's maker: a name where known, else "IANA 12345".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bmc_manufacturer: Option<String>,
    /// The BMC's model (Redfish `Manager.Model`; IPMI "product 0x0123").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bmc_model: Option<String>,
    /// The BMC's firmware version ("2.14", "1.10.00").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware_version: Option<String>,
    /// IPMI only: the IPMI version the BMC implements ("2.0").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipmi_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_manufacturer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bios_version: Option<String>,
}

/// What a sensor measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SensorKind {
    Temperature,
    Fan,
    Voltage,
    Current,
    Power,
    Other,
}

impl SensorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SensorKind::Temperature => "temperature",
            SensorKind::Fan => "fan",
            SensorKind::Voltage => "voltage",
            SensorKind::Current => "current",
            SensorKind::Power => "power",
            SensorKind::Other => "other",
        }
    }
}

/// A sensor's state as the BMC judges it (thresholds crossed, or its own
/// Redfish `Status.Health`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SensorStatus {
    Ok,
    /// A non-critical (warning) threshold is crossed.
    Warning,
    /// A critical or non-recoverable threshold is crossed.
    Critical,
    /// No reading: the sensor is absent, disabled or still initialising.
    Unavailable,
}

impl SensorStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SensorStatus::Ok => "ok",
            SensorStatus::Warning => "warning",
            SensorStatus::Critical => "critical",
            SensorStatus::Unavailable => "unavailable",
        }
    }
}

/// Thresholds in the sensor's unit; `None` where the BMC gives none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    pub lower_critical: Option<f64>,
    pub lower_warning: Option<f64>,
    pub upper_warning: Option<f64>,
    pub upper_critical: Option<f64>,
}

/// One sensor, read now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorReading {
    /// As the BMC names it (IPMI: the SDR's ID string; Redfish: `Name`).
    pub name: String,
    pub kind: SensorKind,
    /// In `unit`; `None` when the sensor gives no reading.
    pub value: Option<f64>,
    /// "degrees C", "RPM", "Volts", "Amps", "Watts", ... (empty if unitless).
    pub unit: String,
    pub status: SensorStatus,
    pub thresholds: Thresholds,
    /// Where it sits, where the BMC says ("Intake", "CPU", "PowerSupply").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
}

/// Every sensor the BMC offers, and what could not be read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub sensors: Vec<SensorReading>,
    /// One line per record or sensor that could not be read or understood
    /// ("SDR record 0x0012: truncated: 9 bytes, 48 expected"). The other
    /// sensors are still reported.
    pub problems: Vec<String>,
}

impl Health {
    /// The server's power draw in watts: the first power sensor reading in
    /// watts (Redfish `PowerConsumedWatts` is reported as such a sensor).
    pub fn power_watts(&self) -> Option<f64> {
        self.sensors
            .iter()
            .filter(|s| s.kind == SensorKind::Power && s.unit.eq_ignore_ascii_case("watts"))
            .find_map(|s| s.value)
    }

    /// The inlet (intake, ambient) temperature in degrees C: a temperature
    /// sensor whose context is "Intake" or whose name says inlet or ambient.
    pub fn inlet_celsius(&self) -> Option<f64> {
        self.sensors
            .iter()
            .filter(|s| s.kind == SensorKind::Temperature)
            .filter(|s| {
                let name = s.name.to_ascii_lowercase();
                s.context.as_deref() == Some("Intake")
                    || name.contains("inlet")
                    || name.contains("ambient")
            })
            .find_map(|s| s.value)
    }
}

/// One entry of the BMC's event log (IPMI SEL, Redfish LogService entries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BmcEvent {
    /// The BMC's id for the entry (IPMI record id in hex "0x0012", Redfish `Id`).
    pub id: String,
    /// When the BMC logged it, Unix seconds; `None` when the BMC's clock was
    /// not set (IPMI timestamps before 0x20000000 count from BMC start).
    pub at: Option<i64>,
    /// The sensor type in words ("Power Unit", "Button / Switch", "Temperature").
    pub sensor_type: String,
    /// The sensor's name or number as the BMC gives it.
    pub sensor: String,
    /// The event in words ("Power Button pressed", "Power Off / Power Down").
    pub event: String,
    /// "asserted" / "deasserted" (IPMI); empty where the BMC gives no direction.
    pub direction: String,
    /// "ok", "warning", "critical" where known, else empty.
    pub severity: String,
    /// The BMC's own message where it gives one (Redfish `Message`), else a
    /// one-line summary built from the fields above.
    pub message: String,
    /// The raw record (IPMI: 16 bytes in hex), for what the decoder left out.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub raw: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sensor(name: &str, kind: SensorKind, unit: &str, value: f64) -> SensorReading {
        SensorReading {
            name: name.into(),
            kind,
            value: Some(value),
            unit: unit.into(),
            status: SensorStatus::Ok,
            thresholds: Thresholds::default(),
            context: None,
        }
    }

    #[test]
    fn power_draw_and_inlet_are_picked_by_kind_unit_and_name() {
        let h = Health {
            sensors: vec![
                sensor("CPU Temp", SensorKind::Temperature, "degrees C", 61.0),
                sensor("Inlet Temp", SensorKind::Temperature, "degrees C", 23.0),
                sensor("PSU1 Current", SensorKind::Current, "Amps", 1.5),
                sensor("Pwr Consumption", SensorKind::Power, "Watts", 212.0),
            ],
            problems: vec![],
        };
        assert_eq!(h.power_watts(), Some(212.0));
        assert_eq!(h.inlet_celsius(), Some(23.0));
        assert_eq!(Health::default().power_watts(), None);
        assert_eq!(Health::default().inlet_celsius(), None);
    }
}
