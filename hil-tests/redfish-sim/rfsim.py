#!/usr/bin/env python3
"""rfsim — a Redfish BMC simulator whose ComputerSystems are QEMU VMs.

One process is one BMC: HTTPS on 127.0.0.1:PORT, N systems, each a QEMU
machine driven over QMP. It behaves the way BMC firmware does rather than the
way an emulator's fake driver does: a GracefulRestart is a warm restart
(PowerState stays On while LastResetTime and BootProgress move), a graceful
request that the guest ignores never completes, PATCH needs the current ETag,
resets may answer 202 with a task, sessions are limited. Knobs and counters
for tests live under /control (plain JSON, loopback only). See README.md.

Standard library only, on purpose: it is an implementation independent of the
Rust driver it tests.
"""

import argparse
import base64
import datetime
import hashlib
import hmac
import http.server
import json
import os
import queue
import re
import secrets
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse
import uuid

REGISTRY = "Base.1.16"
BOOT_TARGETS = ["None", "Pxe", "Hdd", "Cd", "BiosSetup", "UefiHttp"]
BOOT_ENABLED = ["Disabled", "Once", "Continuous"]
STANDARD_RESETS = ["On", "ForceOff", "GracefulShutdown", "GracefulRestart", "ForceRestart"]
EXTRA_RESETS = ["PowerCycle", "Nmi", "PushPowerButton"]
EVIDENCE = ["LastResetTime", "BootProgress"]
# BootProgress.LastState values this simulator uses (Redfish BootProgressTypes).
BP_NONE = "None"
BP_HW_DONE = "SystemHardwareInitializationComplete"
BP_OS_BOOT = "OSBootStarted"
BP_OS_RUNNING = "OSRunning"
# The guest's console contract (hil-tests/guest): one marker per line.
MARK_BOOT = "rack-guest: boot"
MARK_READY = "rack-guest: ready"
MARK_CLEAN_OFF = "rack-guest: power button: clean shutdown"
# The sensors of every system's chassis: (Id, Name, ReadingType, ReadingUnits,
# PhysicalContext, reading, thresholds {LowerCritical, LowerCaution,
# UpperCaution, UpperCritical}, the legacy array it also appears in (Thermal
# Temperatures/Fans, Power Voltages/PowerControl) or None).
SENSOR_DEFS = [
    ("InletTemp", "Inlet Temp", "Temperature", "Cel", "Intake", 23.0,
     {"LowerCritical": 3.0, "LowerCaution": 8.0, "UpperCaution": 38.0, "UpperCritical": 42.0},
     "Temperatures"),
    ("CPU1Temp", "CPU1 Temp", "Temperature", "Cel", "CPU", 48.0,
     {"UpperCaution": 85.0, "UpperCritical": 95.0}, "Temperatures"),
    ("Fan1", "Fan 1", "Rotational", "RPM", "Fan", 5400.0,
     {"LowerCritical": 500.0, "LowerCaution": 1000.0}, "Fans"),
    ("P12V", "12V Rail", "Voltage", "V", "VoltageRegulator", 12.06,
     {"LowerCritical": 10.8, "LowerCaution": 11.4, "UpperCaution": 12.6, "UpperCritical": 13.2},
     "Voltages"),
    ("PSU1Current", "PSU1 Input Current", "Current", "A", "PowerSupply", 0.82,
     {"UpperCaution": 8.0, "UpperCritical": 10.0}, None),
    ("TotalPower", "Total Power", "Power", "W", "Chassis", 186.0, {}, "PowerControl"),
]
LEGACY_KEYS = {"Temperatures": "ReadingCelsius", "Fans": "Reading", "Voltages": "ReadingVolts",
               "PowerControl": "PowerConsumedWatts"}
LEGACY_THRESHOLDS = {"LowerCritical": "LowerThresholdCritical",
                     "LowerCaution": "LowerThresholdNonCritical",
                     "UpperCaution": "UpperThresholdNonCritical",
                     "UpperCritical": "UpperThresholdCritical"}
SENSOR_STATES = ["Enabled", "Absent", "Disabled", "UnavailableOffline"]
SEL_MAX = 1000  # entries kept per system; the oldest go first
# SEL sensor numbers (IPMI-like: the sensor an entry is about).
SEL_POWER_UNIT, SEL_RESTART, SEL_BUTTON = 1, 2, 3
# A guest-side RESET this soon after a reset, before the OS said anything, is
# the firmware re-initialising (SeaBIOS resets once more after a QMP
# system_reset), not a second restart.
FIRMWARE_RESET_WINDOW = 3.0


def now_iso():
    """Redfish DateTime with milliseconds, so two resets within a second differ."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def log(*parts):
    print(f"{now_iso()} rfsim:", *parts, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------
# Knobs: a validated dictionary per scope (the BMC, each system).


def _int_min(lo):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"must be an integer >= {lo}")
        return v
    return check


def _optional(check):
    def opt(v):
        return None if v is None else check(v)
    return opt


def _http_status(v):
    if isinstance(v, bool) or not isinstance(v, int) or not 100 <= v <= 599:
        raise ValueError("must be an HTTP status code (100-599)")
    return v


def _one_of(*allowed):
    def check(v):
        if v not in allowed:
            raise ValueError(f"must be one of {list(allowed)}")
        return v
    return check


def _subset_of(allowed):
    def check(v):
        if not isinstance(v, list) or any(x not in allowed for x in v):
            raise ValueError(f"must be a list of values from {allowed}")
        return [x for x in allowed if x in v]  # canonical order, no duplicates
    return check


def _bool(v):
    if not isinstance(v, bool):
        raise ValueError("must be true or false")
    return v


# Fault knobs exist at both scopes: the BMC's apply to every /redfish request,
# a system's to the requests under /redfish/v1/Systems/<id>.
def _optional_str(v):
    if v is not None and (not isinstance(v, str) or not v):
        raise ValueError("must be a non-empty string or null")
    return v


def _redirect(v):
    if v is not None and (not isinstance(v, str) or not re.match(r"https?://[^/]+$", v)):
        raise ValueError("must be null or scheme://host[:port], without a path")
    return v


FAULT_KNOBS = {
    "latency_ms": (_int_min(0), 0),
    "status": (_optional(_http_status), None),
    "status_times": (_optional(_int_min(1)), None),
    "hang": (_bool, False),
    # Lying or broken answers (see README.md, "Knobs").
    "content_type": (_optional_str, None),
    "body": (_optional(_one_of("html", "truncated", "short_read")), None),
    "redirect": (_redirect, None),
}
BMC_KNOBS = dict(FAULT_KNOBS, **{
    "silent_ms": (_int_min(0), 0),
    "session_limit": (_int_min(0), 4),
    "session_limit_status": (_http_status, 503),
    "session_timeout_s": (_int_min(1), 1800),
    "basic_auth": (_bool, True),
    # ProtocolFeaturesSupported.ExpandQuery advertised and $expand=. honoured
    # on collections of sensors.
    "expand": (_bool, False),
})
SYSTEM_KNOBS = dict(FAULT_KNOBS, **{
    "graceful_restart": (_one_of("warm", "cold", "ignored"), "warm"),
    "reset_response": (_one_of(204, 202), 204),
    "task_min_ms": (_int_min(0), 1000),
    "evidence": (_subset_of(EVIDENCE), list(EVIDENCE)),
    "reset_allowable": (_one_of("inline", "action_info", "none"), "inline"),
    "extra_resets": (_subset_of(EXTRA_RESETS), []),
    "unsupported_status": (_one_of(400, 501), 400),
    "restart_when_off": (_one_of("conflict", "power_on"), "conflict"),
    "cold_off_ms": (_int_min(0), 1000),
    "graceful_timeout_ms": (_int_min(0), 0),
    "require_if_match": (_bool, True),
    "missing_if_match_status": (_one_of(412, 428), 412),
    "precondition_fail_times": (_int_min(0), 0),
    "boot_targets": (_subset_of(BOOT_TARGETS), list(BOOT_TARGETS)),
    "power_state": (_optional(_one_of("On", "Off")), None),
    "task_stuck": (_bool, False),
    "reset_unanswered": (_bool, False),
    # Inventory (README.md, "Sensors and the event log").
    "sensors": (_one_of("both", "sensors", "legacy"), "both"),
    "malformed_sensor": (_bool, False),
    "sel_page_size": (_int_min(1), 50),
    "malformed_log_entry": (_bool, False),
})


class Knobs:
    def __init__(self, schema):
        self.schema = schema
        self.values = {k: (list(d) if isinstance(d, list) else d) for k, (_, d) in schema.items()}

    def update(self, changes):
        """Validates every change first, then applies them all (or none)."""
        if not isinstance(changes, dict):
            raise ValueError("knobs must be a JSON object")
        checked = {}
        for k, v in changes.items():
            if k not in self.schema:
                raise ValueError(f"unknown knob {k!r} (known: {sorted(self.schema)})")
            try:
                checked[k] = self.schema[k][0](v)
            except ValueError as e:
                raise ValueError(f"knob {k!r}: {e}") from None
        self.values.update(checked)

    def __getitem__(self, k):
        return self.values[k]

    def __setitem__(self, k, v):
        self.values[k] = v

    def snapshot(self):
        return json.loads(json.dumps(self.values))


# ----------------------------------------------------------------------------
# Errors in the Redfish shape.


class RedfishError(Exception):
    def __init__(self, status, message_id, message, args=(), resolution="", headers=None):
        super().__init__(message)
        self.status = status
        self.message_id = message_id
        self.message = message
        self.args_ = list(args)
        self.resolution = resolution
        self.headers = headers or {}

    def body(self):
        return error_body(self.message_id, self.message, self.args_, self.resolution)


def error_body(message_id, message, args=(), resolution=""):
    info = {
        "@odata.type": "#Message.v1_1_1.Message",
        "MessageId": f"{REGISTRY}.{message_id}",
        "Message": message,
        "MessageArgs": [str(a) for a in args],
        "MessageSeverity": "Critical",
        "Severity": "Critical",
        "Resolution": resolution or "None.",
    }
    return {
        "error": {
            "code": f"{REGISTRY}.GeneralError",
            "message": "A general error has occurred. See ExtendedInfo for more information.",
            "@Message.ExtendedInfo": [info],
        }
    }


def not_found(path):
    return RedfishError(404, "ResourceNotFound",
                        f"The requested resource at {path} was not found.", [path],
                        "Provide a valid resource identifier and resubmit the request.")


def no_session():
    return RedfishError(401, "NoValidSession",
                        "There is no valid session established with the implementation.", [],
                        "Establish a session before attempting any operations.",
                        {"WWW-Authenticate": 'Basic realm="rfsim"'})


# ----------------------------------------------------------------------------
# QMP: one connection per QEMU, a reader thread, commands wait for replies.


class Qmp:
    def __init__(self, path, on_event, timeout=10.0):
        deadline = time.monotonic() + timeout
        while True:
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(path)
                break
            except OSError:
                s.close()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"QMP socket {path} did not accept a connection")
                time.sleep(0.02)
        self.sock = s
        self.file = s.makefile("rb")
        self.on_event = on_event
        self.replies = queue.Queue()
        self.send_lock = threading.Lock()
        self.closed = False
        greeting = self.file.readline()
        if not greeting:
            raise RuntimeError("QMP closed before its greeting")
        self.reader = threading.Thread(target=self._read, daemon=True, name="qmp-reader")
        self.reader.start()
        self.execute("qmp_capabilities")

    def _read(self):
        try:
            for line in self.file:
                msg = json.loads(line)
                if "event" in msg:
                    try:
                        self.on_event(msg["event"], msg.get("data") or {})
                    except Exception:
                        traceback.print_exc()
                else:
                    self.replies.put(msg)
        except (OSError, ValueError):
            pass
        self.closed = True
        self.replies.put({"error": {"desc": "QMP connection closed"}})

    def execute(self, command, arguments=None, timeout=10.0):
        msg = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        with self.send_lock:
            if self.closed:
                raise RuntimeError(f"QMP {command}: connection closed")
            self.sock.sendall(json.dumps(msg).encode() + b"\n")
            try:
                reply = self.replies.get(timeout=timeout)
            except queue.Empty:
                raise RuntimeError(f"QMP {command}: no reply within {timeout} s") from None
        if "error" in reply:
            raise RuntimeError(f"QMP {command}: {reply['error'].get('desc')}")
        return reply.get("return")

    def close(self):
        self.closed = True
        try:
            self.sock.close()
        except OSError:
            pass


# ----------------------------------------------------------------------------
# Tasks (202 answers).


class Task:
    def __init__(self, bmc, task_id, system_id, reset_type, min_ms):
        self.bmc = bmc
        self.id = str(task_id)
        self.system_id = system_id
        self.reset_type = reset_type
        self.state = "Running"
        self.status = "OK"
        self.start = now_iso()
        self.end = None
        self.messages = []
        self.not_before = time.monotonic() + min_ms / 1000.0
        self.outcome = None  # (state, status, message) waiting for not_before

    @property
    def uri(self):
        return f"/redfish/v1/TaskService/Tasks/{self.id}"

    @property
    def monitor(self):
        return f"/redfish/v1/TaskService/TaskMonitors/{self.id}"

    def finish(self, state, status, message_id, message):
        """Records the outcome; shown once the task's minimum duration passed."""
        if self.outcome is None and self.state == "Running":
            self.outcome = (state, status, message_id, message)

    def refresh(self):
        if self.outcome and self.state == "Running" and time.monotonic() >= self.not_before:
            state, status, message_id, message = self.outcome
            self.state, self.status, self.end = state, status, now_iso()
            self.messages.append({
                "@odata.type": "#Message.v1_1_1.Message",
                "MessageId": f"{REGISTRY}.{message_id}",
                "Message": message,
                "MessageSeverity": "OK" if status == "OK" else "Critical",
            })

    def resource(self):
        self.refresh()
        body = {
            "@odata.id": self.uri,
            "@odata.type": "#Task.v1_7_0.Task",
            "Id": self.id,
            "Name": f"Reset {self.reset_type} of system {self.system_id}",
            "TaskState": self.state,
            "TaskStatus": self.status,
            "StartTime": self.start,
            "TaskMonitor": self.monitor,
            "PercentComplete": 100 if self.state != "Running" else 0,
            "Messages": list(self.messages),
            "Payload": {
                "TargetUri": f"/redfish/v1/Systems/{self.system_id}/Actions/ComputerSystem.Reset",
                "HttpOperation": "POST",
                "JsonBody": json.dumps({"ResetType": self.reset_type}),
            },
        }
        if self.end:
            body["EndTime"] = self.end
        return body


# ----------------------------------------------------------------------------
# One ComputerSystem: a QEMU VM, its power, boot progress and boot override.


class System:
    def __init__(self, bmc, index, args):
        self.bmc = bmc
        self.index = index
        self.id = f"sys{index}"
        self.uuid = str(uuid.UUID(int=0x52F1_0000_0000_4000_8000_0000_0000_0000 + index))
        self.dir = os.path.join(args.dir, self.id)
        os.makedirs(self.dir, exist_ok=True)
        self.console_path = os.path.join(self.dir, "console.log")
        open(self.console_path, "ab").close()
        self.qmp_path = os.path.join(self.dir, "qmp.sock")
        self.args = args
        self.knobs = Knobs(SYSTEM_KNOBS)
        self.lock = bmc.lock
        # Power and the evidence a BMC keeps about restarts.
        self.power = "Off"
        # Firmware shows a LastResetTime before the host ever booted (the time
        # the BMC came up, here the simulator's start).
        self.last_reset_time = now_iso()
        self.boot_progress = BP_NONE
        self.boot_progress_time = now_iso()
        self.last_reset_mono = 0.0
        self.boot_target = "None"
        self.boot_enabled = "Disabled"
        self.boot_mode = "Legacy"
        self.boots = []            # every boot: time, cause, device
        self.console_marks = {"boot": 0, "ready": 0, "clean_shutdown": 0}
        self.pending = None        # {"kind": "shutdown"|"restart", "task": Task|None, "since"}
        self.etag_salt = 0         # bumped to make the ETag change without a visible change
        self.events = []           # what happened, for debugging (bounded)
        # The VM.
        self.proc = None
        self.qmp = None
        self.expected_exit = set()
        self.ops = queue.Queue()
        self.console_offset = 0
        self.console_partial = b""
        self.console_lock = threading.Lock()
        # The chassis' sensors (values settable through /control) and the SEL.
        self.sensors = {}
        for (sid, name, rtype, units, context, reading, thresholds, legacy) in SENSOR_DEFS:
            self.sensors[sid] = {"name": name, "type": rtype, "units": units, "context": context,
                                 "reading": reading, "thresholds": dict(thresholds),
                                 "legacy": legacy, "state": "Enabled"}
        self.sel = []
        self.sel_next = 1
        threading.Thread(target=self._worker, daemon=True, name=f"{self.id}-ops").start()
        threading.Thread(target=self._follow_console, daemon=True, name=f"{self.id}-console").start()

    # -- bookkeeping -------------------------------------------------------

    def note(self, what):
        entry = f"{now_iso()} {what}"
        self.events.append(entry)
        del self.events[:-200]
        log(self.id, what)

    def set_progress(self, state):
        self.boot_progress = state
        self.boot_progress_time = now_iso()

    def new_boot(self, cause):
        """A boot begins (power on or any reset): the evidence a BMC keeps moves
        and a one-time boot override is used up."""
        self.last_reset_time = now_iso()
        self.last_reset_mono = time.monotonic()
        self.set_progress(BP_HW_DONE)
        device = self.next_boot_device()
        if self.boot_enabled == "Once":
            self.boot_enabled = "Disabled"
        self.boots.append({"n": len(self.boots) + 1, "time": self.last_reset_time,
                           "cause": cause, "device": device})
        self.bmc.counters["boots"][self.id] = self.bmc.counters["boots"].get(self.id, 0) + 1
        self.note(f"boot #{len(self.boots)} ({cause}, device {device})")
        if cause in ("power_on", "power_button", "power_cycle", "graceful_restart_cold"):
            self.sel_add("Power Unit", SEL_POWER_UNIT, "Deassert", "OK",
                         f"The system powered on ({cause}).", "SystemPowerOn")
        else:
            self.sel_add("System Boot / Restart Initiated", SEL_RESTART, "Assert", "OK",
                         f"The system restarted ({cause}).", "SystemRestart")
        return device

    def next_boot_device(self):
        """What the next boot boots from: the override target, else "Default"."""
        if self.boot_enabled in ("Once", "Continuous") and self.boot_target != "None":
            return self.boot_target
        return "Default"

    def finish_pending(self, state, status, message_id, message):
        if self.pending and self.pending.get("task"):
            self.pending["task"].finish(state, status, message_id, message)
        self.pending = None

    # -- the Redfish view --------------------------------------------------

    def allowed_resets(self):
        return STANDARD_RESETS + self.knobs["extra_resets"]

    def resource(self):
        base = f"/redfish/v1/Systems/{self.id}"
        reset = {"target": f"{base}/Actions/ComputerSystem.Reset", "title": "Reset"}
        if self.knobs["reset_allowable"] == "inline":
            reset["ResetType@Redfish.AllowableValues"] = self.allowed_resets()
        elif self.knobs["reset_allowable"] == "action_info":
            reset["@Redfish.ActionInfo"] = f"{base}/ResetActionInfo"
        body = {
            "@odata.id": base,
            "@odata.type": "#ComputerSystem.v1_20_0.ComputerSystem",
            "Id": self.id,
            "Name": f"rfsim system {self.index}",
            "SystemType": "Physical",
            "Manufacturer": "rack-agent bench",
            "Model": "QEMU virtual machine",
            "SerialNumber": f"RFSIM-{self.index:04d}",
            "BiosVersion": f"SeaBIOS rfsim-{self.index}.0",
            "UUID": self.uuid,
            # A lying BMC (knob power_state) reports the same power whatever
            # the machine does.
            "PowerState": self.knobs["power_state"] or self.power,
            "Status": {"State": "Enabled" if self.power == "On" else "StandbyOffline",
                       "Health": "OK"},
            "Boot": {
                "BootSourceOverrideTarget": self.boot_target,
                "BootSourceOverrideTarget@Redfish.AllowableValues": list(self.knobs["boot_targets"]),
                "BootSourceOverrideEnabled": self.boot_enabled,
                "BootSourceOverrideEnabled@Redfish.AllowableValues": list(BOOT_ENABLED),
                "BootSourceOverrideMode": self.boot_mode,
                "BootSourceOverrideMode@Redfish.AllowableValues": ["Legacy"],
            },
            "Actions": {"#ComputerSystem.Reset": reset},
            "Links": {
                "ManagedBy": [{"@odata.id": "/redfish/v1/Managers/BMC"}],
                # The enclosure, then the system's own chassis (with its
                # sensors), as a blade's system links both.
                "Chassis": [{"@odata.id": "/redfish/v1/Chassis/Chassis1"},
                            {"@odata.id": f"/redfish/v1/Chassis/{self.id}"}],
            },
            "LogServices": {"@odata.id": f"{base}/LogServices"},
        }
        if "LastResetTime" in self.knobs["evidence"]:
            body["LastResetTime"] = self.last_reset_time
        if "BootProgress" in self.knobs["evidence"]:
            body["BootProgress"] = {"LastState": self.boot_progress,
                                    "LastStateTime": self.boot_progress_time}
        body["@odata.etag"] = etag_of(body, self.etag_salt)
        return body

    def action_info(self):
        return {
            "@odata.id": f"/redfish/v1/Systems/{self.id}/ResetActionInfo",
            "@odata.type": "#ActionInfo.v1_3_0.ActionInfo",
            "Id": "ResetActionInfo",
            "Name": "Reset Action Info",
            "Parameters": [{
                "Name": "ResetType",
                "Required": True,
                "DataType": "String",
                "AllowableValues": self.allowed_resets(),
            }],
        }

    # -- inventory: chassis, sensors, SEL (called with the lock held) ---------------

    def sel_add(self, sensor_type, number, code, severity, message, message_id):
        entry_id = str(self.sel_next)
        self.sel_next += 1
        self.sel.append({
            "@odata.id": f"/redfish/v1/Systems/{self.id}/LogServices/SEL/Entries/{entry_id}",
            "@odata.type": "#LogEntry.v1_15_0.LogEntry",
            "Id": entry_id,
            "Name": f"SEL entry {entry_id}",
            "EntryType": "SEL",
            "Created": now_iso(),
            "Severity": severity,
            "Message": message,
            "MessageId": f"RackBench.1.0.{message_id}",
            "SensorType": sensor_type,
            "SensorNumber": number,
            "EntryCode": code,
        })
        del self.sel[:-SEL_MAX]
        self.note(f"SEL {entry_id}: {message}")

    @staticmethod
    def sensor_health(sensor):
        """The firmware's own judgement: the reading against the thresholds."""
        v, t = sensor["reading"], sensor["thresholds"]
        if sensor["state"] != "Enabled" or v is None:
            return None
        if v >= t.get("UpperCritical", float("inf")) or v <= t.get("LowerCritical", float("-inf")):
            return "Critical"
        if v >= t.get("UpperCaution", float("inf")) or v <= t.get("LowerCaution", float("-inf")):
            return "Warning"
        return "OK"

    def chassis_resource(self):
        base = f"/redfish/v1/Chassis/{self.id}"
        mode = self.knobs["sensors"]
        body = {
            "@odata.id": base,
            "@odata.type": "#Chassis.v1_23_0.Chassis",
            "Id": self.id,
            "Name": f"rfsim system {self.index} chassis",
            "ChassisType": "RackMount",
            "Manufacturer": "rack-agent bench",
            "PowerState": self.power,
            "Status": {"State": "Enabled", "Health": "OK"},
            "Links": {
                "ComputerSystems": [{"@odata.id": f"/redfish/v1/Systems/{self.id}"}],
                "ManagedBy": [{"@odata.id": "/redfish/v1/Managers/BMC"}],
                "ContainedBy": {"@odata.id": "/redfish/v1/Chassis/Chassis1"},
            },
        }
        if mode in ("both", "sensors"):
            body["Sensors"] = {"@odata.id": f"{base}/Sensors"}
        if mode in ("both", "legacy"):
            body["Thermal"] = {"@odata.id": f"{base}/Thermal"}
            body["Power"] = {"@odata.id": f"{base}/Power"}
        return body

    def sensor_resource(self, sid):
        s = self.sensors[sid]
        uri = f"/redfish/v1/Chassis/{self.id}/Sensors/{sid}"
        status = {"State": s["state"]}
        health = self.sensor_health(s)
        if health:
            status["Health"] = health
        return {
            "@odata.id": uri,
            "@odata.type": "#Sensor.v1_7_0.Sensor",
            "Id": sid,
            "Name": s["name"],
            "ReadingType": s["type"],
            "ReadingUnits": s["units"],
            "Reading": s["reading"] if s["state"] == "Enabled" else None,
            "PhysicalContext": s["context"],
            "Status": status,
            "Thresholds": {k: {"Reading": v} for k, v in s["thresholds"].items()},
        }

    def malformed_sensor(self):
        return {
            "@odata.id": f"/redfish/v1/Chassis/{self.id}/Sensors/Broken",
            "@odata.type": "#Sensor.v1_7_0.Sensor",
            "Id": "Broken",
            "Name": "Broken Sensor",
            "ReadingType": "Temperature",
            "ReadingUnits": "Cel",
            "Reading": "n/a",
            "Status": {"State": "Enabled", "Health": "OK"},
        }

    def sensor_ids(self):
        ids = list(self.sensors)
        if self.knobs["malformed_sensor"]:
            ids.insert(1, "Broken")
        return ids

    def sensors_collection(self, expand):
        uri = f"/redfish/v1/Chassis/{self.id}/Sensors"
        members = []
        for sid in self.sensor_ids():
            if expand:
                members.append(self.malformed_sensor() if sid == "Broken"
                               else self.sensor_resource(sid))
            else:
                members.append({"@odata.id": f"{uri}/{sid}"})
        return {
            "@odata.id": uri,
            "@odata.type": "#SensorCollection.SensorCollection",
            "Name": "Sensors",
            "Members@odata.count": len(members),
            "Members": members,
        }

    def legacy_resource(self, which):
        """Thermal (Temperatures, Fans) or Power (Voltages, PowerControl)."""
        uri = f"/redfish/v1/Chassis/{self.id}/{which}"
        arrays = ["Temperatures", "Fans"] if which == "Thermal" else ["Voltages", "PowerControl"]
        body = {"@odata.id": uri, "@odata.type": f"#{which}.v1_7_0.{which}", "Id": which,
                "Name": which}
        for array in arrays:
            items = []
            for sid, s in self.sensors.items():
                if s["legacy"] != array:
                    continue
                n = len(items)
                status = {"State": s["state"]}
                health = self.sensor_health(s)
                if health:
                    status["Health"] = health
                item = {"@odata.id": f"{uri}#/{array}/{n}", "MemberId": str(n), "Name": s["name"],
                        "Status": status, "PhysicalContext": s["context"]}
                item[LEGACY_KEYS[array]] = s["reading"] if s["state"] == "Enabled" else None
                if array == "Fans":
                    item["ReadingUnits"] = "RPM"
                if array != "PowerControl":
                    for k, v in s["thresholds"].items():
                        item[LEGACY_THRESHOLDS[k]] = v
                items.append(item)
            if array == "Temperatures" and self.knobs["malformed_sensor"]:
                items.insert(1, {"Name": "Broken Sensor", "ReadingCelsius": "n/a",
                                 "Status": {"State": "Enabled", "Health": "OK"}})
            for n, item in enumerate(items):
                item["@odata.id"] = f"{uri}#/{array}/{n}"
                item["MemberId"] = str(n)
            body[array] = items
            body[f"{array}@odata.count"] = len(items)
        return body

    def log_services(self):
        uri = f"/redfish/v1/Systems/{self.id}/LogServices"
        return Bmc.collection(uri, "LogServiceCollection", "Log Services", [f"{uri}/SEL"])

    def sel_service(self):
        uri = f"/redfish/v1/Systems/{self.id}/LogServices/SEL"
        return {
            "@odata.id": uri,
            "@odata.type": "#LogService.v1_5_0.LogService",
            "Id": "SEL",
            "Name": "System Event Log",
            "LogEntryType": "SEL",
            "OverWritePolicy": "WrapsWhenFull",
            "MaxNumberOfRecords": SEL_MAX,
            "ServiceEnabled": True,
            "DateTime": now_iso(),
            "Entries": {"@odata.id": f"{uri}/Entries"},
            "Actions": {"#LogService.ClearLog": {"target": f"{uri}/Actions/LogService.ClearLog"}},
        }

    def sel_entries(self):
        """What the Entries collection lists: the SEL, plus a malformed entry
        after the first one with knob malformed_log_entry."""
        entries = list(self.sel)
        if self.knobs["malformed_log_entry"]:
            entries.insert(min(1, len(entries)), {
                "@odata.id": f"/redfish/v1/Systems/{self.id}/LogServices/SEL/Entries/broken",
                "Name": "SEL entry without an Id",
                "Created": "yesterday",
                "Message": 42,
            })
        return entries

    def sel_page(self, skip):
        uri = f"/redfish/v1/Systems/{self.id}/LogServices/SEL/Entries"
        entries = self.sel_entries()
        size = self.knobs["sel_page_size"]
        body = {
            "@odata.id": uri,
            "@odata.type": "#LogEntryCollection.LogEntryCollection",
            "Name": "System Event Log Entries",
            "Members@odata.count": len(entries),
            "Members": entries[skip:skip + size],
        }
        if skip + size < len(entries):
            body["Members@odata.nextLink"] = f"{uri}?$skip={skip + size}"
        return body

    def set_sensors(self, changes):
        """/control: {"InletTemp": 45.0} or {"InletTemp": {"reading": 45.0,
        "state": "Absent"}}; all or nothing. A crossing of a threshold is
        logged in the SEL, as firmware does."""
        if not isinstance(changes, dict):
            raise ValueError("sensors: a JSON object of sensor id -> reading or {reading, state}")
        checked = {}
        for sid, v in changes.items():
            if sid not in self.sensors:
                raise ValueError(f"unknown sensor {sid!r} (known: {list(self.sensors)})")
            if not isinstance(v, dict):
                v = {"reading": v}
            for k in v:
                if k not in ("reading", "state"):
                    raise ValueError(f"sensor {sid}: unknown field {k!r} (reading, state)")
            if "reading" in v and (isinstance(v["reading"], bool)
                                   or not isinstance(v["reading"], (int, float))):
                raise ValueError(f"sensor {sid}: reading must be a number")
            if "state" in v and v["state"] not in SENSOR_STATES:
                raise ValueError(f"sensor {sid}: state must be one of {SENSOR_STATES}")
            checked[sid] = v
        for sid, v in checked.items():
            s = self.sensors[sid]
            before = self.sensor_health(s)
            if "reading" in v:
                s["reading"] = float(v["reading"])
            if "state" in v:
                s["state"] = v["state"]
            after = self.sensor_health(s)
            self.note(f"sensor {sid}: reading {s['reading']}, state {s['state']}, health {after}")
            if after != before and (after in ("Warning", "Critical")
                                    or before in ("Warning", "Critical")):
                going = after if after in ("Warning", "Critical") else before
                code = "Assert" if after in ("Warning", "Critical") else "Deassert"
                what = "critical" if going == "Critical" else "caution"
                sev = after if after in ("Warning", "Critical") else "OK"
                self.sel_add(s["type"] if s["type"] != "Rotational" else "Fan",
                             10 + list(self.sensors).index(sid), code, sev,
                             f"{s['name']} {'crossed' if code == 'Assert' else 'is back within'} "
                             f"its {what} threshold (reading {s['reading']:g}).",
                             "SensorThresholdCrossed" if code == "Assert" else "SensorNormal")

    def press_power_button(self, hold):
        """/control: the front-panel button. Pressed with the system On, the
        ACPI power button (the OS decides; an OS-less VM ignores it); held,
        the power goes off at once; pressed with it Off, it powers on."""
        self.sel_add("Button/Switch", SEL_BUTTON, "Assert", "OK", "Power Button pressed",
                     "PowerButtonPressed")
        if self.power == "On" and hold:
            self.note("power button held: forced off")
            self.ops.put(("power_off", None, None))
        elif self.power == "On":
            self.note("power button pressed: ACPI power button")
            self.ops.put(("powerdown", None, None))
        else:
            self.note("power button pressed: power on")
            self.ops.put(("power_on", "power_button", None))

    def control_view(self):
        return {
            "id": self.id,
            "power": self.power,
            "qemu_pid": self.proc.pid if self.proc and self.proc.poll() is None else None,
            "qmp": self.qmp_path,
            "console": self.console_path,
            "last_reset_time": self.last_reset_time,
            "boot_progress": {"LastState": self.boot_progress,
                              "LastStateTime": self.boot_progress_time},
            "boot_override": {"target": self.boot_target, "enabled": self.boot_enabled},
            "boots": list(self.boots),
            "console_marks": dict(self.console_marks),
            "pending": None if not self.pending else {
                "kind": self.pending["kind"],
                "since": self.pending["since"],
                "task": self.pending["task"].id if self.pending.get("task") else None,
            },
            "knobs": self.knobs.snapshot(),
            "events": list(self.events[-50:]),
        }

    # -- Reset requests (called with the lock held) --------------------------

    def reset(self, reset_type, task):
        """Decides what a Reset does now; the slow parts go to the worker.
        Returns nothing; raises RedfishError when refused."""
        on = self.power == "On"
        if reset_type in ("ForceRestart", "GracefulRestart", "Nmi") and not on:
            if self.knobs["restart_when_off"] == "power_on" and reset_type != "Nmi":
                reset_type = "On"
            else:
                raise RedfishError(409, "ChassisPowerStateOnRequired",
                                   f"The chassis with Id '{self.id}' is required to be powered "
                                   "on to perform this request.", [self.id],
                                   "Power on the chassis and resubmit the request.")
        self.note(f"Reset {reset_type} requested (power {self.power})")
        if reset_type == "On":
            self._supersede("On")
            self.ops.put(("power_on", "power_on", task))
        elif reset_type == "ForceOff":
            self._supersede("ForceOff")
            self.ops.put(("power_off", None, task))
        elif reset_type == "GracefulShutdown":
            if not on:
                self._done(task)
                return
            self._supersede("GracefulShutdown")
            self.pending = {"kind": "shutdown", "task": task, "since": now_iso()}
            self.ops.put(("powerdown", None, None))
            self._arm_graceful_timeout()
        elif reset_type == "GracefulRestart":
            style = self.knobs["graceful_restart"]
            self._supersede("GracefulRestart")
            if style == "ignored":
                self.note("GracefulRestart accepted and ignored (graceful_restart = ignored)")
                self._done(task)
                return
            self.pending = {"kind": "restart", "style": style, "task": task, "since": now_iso()}
            self.ops.put(("powerdown", None, None))
            self._arm_graceful_timeout()
        elif reset_type == "ForceRestart":
            self._supersede("ForceRestart")
            self.ops.put(("reset", "force_restart", task))
        elif reset_type == "PowerCycle":
            self._supersede("PowerCycle")
            self.ops.put(("cycle", "power_cycle", task))
        elif reset_type == "Nmi":
            self.ops.put(("nmi", None, task))
        elif reset_type == "PushPowerButton":
            if on:
                self._supersede("PushPowerButton")
                self.pending = {"kind": "shutdown", "task": task, "since": now_iso()}
                self.ops.put(("powerdown", None, None))
            else:
                self.ops.put(("power_on", "power_button", task))

    def _done(self, task):
        if task:
            task.finish("Completed", "OK", "Success", "Successfully Completed Request")

    def _supersede(self, by):
        if self.pending:
            self.note(f"pending graceful {self.pending['kind']} superseded by {by}")
            self.finish_pending("Cancelled", "Warning", "OperationFailed",
                                f"Superseded by a Reset of type {by} before the guest acted.")

    def _arm_graceful_timeout(self):
        ms = self.knobs["graceful_timeout_ms"]
        if not ms:
            return
        pending = self.pending

        def expire():
            with self.lock:
                if self.pending is pending:
                    self.note(f"graceful {pending['kind']} timed out after {ms} ms")
                    self.finish_pending("Exception", "Critical", "OperationTimeout",
                                        "The guest did not act on the ACPI power button in time.")
        t = threading.Timer(ms / 1000.0, expire)
        t.daemon = True
        t.start()

    # -- the worker: everything that talks to QEMU ------------------------------

    def _worker(self):
        while True:
            op, cause, task = self.ops.get()
            try:
                getattr(self, f"_op_{op}")(cause, task)
            except Exception as e:  # keep serving; say what failed
                traceback.print_exc()
                with self.lock:
                    self.note(f"{op} failed: {e}")
                    if task:
                        task.finish("Exception", "Critical", "InternalError", f"{op} failed: {e}")

    def _op_power_on(self, cause, task):
        with self.lock:
            if self.power == "On":
                self._done(task)
                return
        self._start_vm(cause)
        with self.lock:
            self._done(task)

    def _op_power_off(self, cause, task):
        self._stop_vm()
        with self.lock:
            self._done(task)

    def _op_powerdown(self, cause, task):
        if self._vm_alive():
            self.qmp.execute("system_powerdown")
            with self.lock:
                self.note("ACPI power button pressed (QMP system_powerdown)")

    def _op_reset(self, cause, task):
        if not self._vm_alive():
            with self.lock:
                if task:
                    task.finish("Exception", "Critical", "OperationFailed", "The system is off.")
            return
        self._sync_console()
        with self.lock:
            self.new_boot(cause)
        self.qmp.execute("system_reset")
        try:
            self.qmp.execute("cont")  # from a guest poweroff (-no-shutdown) the VM is stopped
        except RuntimeError:
            pass
        with self.lock:
            self._done(task)

    def _op_warm_restart(self, cause, task):
        # The guest halted after the ACPI power button: reset and continue, the
        # power stays on, as firmware's warm restart does.
        self._op_reset(cause, task)

    def _op_cycle(self, cause, task):
        self._stop_vm()
        time.sleep(self.knobs["cold_off_ms"] / 1000.0)
        self._start_vm(cause)
        with self.lock:
            self._done(task)

    def _op_nmi(self, cause, task):
        if self._vm_alive():
            self.qmp.execute("inject-nmi")
        with self.lock:
            self.note("NMI injected")
            self._done(task)

    def _op_guest_off(self, cause, task):
        """The guest powered itself off (-no-shutdown kept QEMU): finish what
        was pending, the firmware way."""
        with self.lock:
            pending = self.pending
        if pending and pending["kind"] == "restart" and pending.get("style") == "warm":
            self._op_warm_restart("graceful_restart", None)
            with self.lock:
                self.finish_pending("Completed", "OK", "Success", "Successfully Completed Request")
            return
        if pending and pending["kind"] == "restart":  # cold
            self._stop_vm()
            time.sleep(self.knobs["cold_off_ms"] / 1000.0)
            self._start_vm("graceful_restart_cold")
            with self.lock:
                self.finish_pending("Completed", "OK", "Success", "Successfully Completed Request")
            return
        self._stop_vm()
        with self.lock:
            self.finish_pending("Completed", "OK", "Success", "Successfully Completed Request")

    # -- QEMU ------------------------------------------------------------------

    def _vm_alive(self):
        return self.proc is not None and self.proc.poll() is None and self.qmp is not None

    def _qemu_args(self):
        a = self.args
        cmd = [a.qemu, "-name", f"rfsim-{self.id}", "-S", "-no-shutdown", "-nodefaults",
               "-display", "none", "-machine", "graphics=off", "-uuid", self.uuid,
               "-chardev", f"file,id=console,path={self.console_path},append=on",
               "-serial", "chardev:console",
               "-qmp", f"unix:{self.qmp_path},server=on,wait=off"]
        # The guest's own choices (memory, accelerator) win over ours.
        if "-m" not in a.guest_args:
            cmd += ["-m", str(a.memory)]
        if "-accel" not in a.guest_args:
            for accel in a.accel.split(","):
                cmd += ["-accel", accel]
        return cmd + a.guest_args

    def _start_vm(self, cause):
        if self._vm_alive():
            return
        self._sync_console()
        with self.lock:
            device = self.next_boot_device()
        cmd = self._qemu_args()
        if device == "Pxe" and self.args.guest == "none" and self.bmc.pxe_rom:
            # The VM really network-boots (iPXE on QEMU's restricted user net).
            cmd += ["-boot", "once=n", "-nic", "user,model=e1000,restrict=on"]
        try:
            os.unlink(self.qmp_path)
        except FileNotFoundError:
            pass
        qlog = open(os.path.join(self.dir, "qemu.log"), "ab")
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=qlog, stderr=qlog,
                                start_new_session=True)
        qlog.close()
        with open(os.path.join(self.args.dir, "qemu.pids"), "a") as f:
            f.write(f"{proc.pid}\n")
        with open(os.path.join(self.dir, "qemu.pid"), "w") as f:
            f.write(f"{proc.pid}\n")
        self.proc = proc
        try:
            self.qmp = Qmp(self.qmp_path, lambda ev, data: self._on_event(proc, ev, data))
            self.qmp.execute("cont")
        except Exception:
            self._kill(proc)
            with self.lock:
                self.power = "Off"
                self.set_progress(BP_NONE)
            raise
        threading.Thread(target=self._watch_exit, args=(proc,), daemon=True,
                         name=f"{self.id}-exit").start()
        with self.lock:
            self.power = "On"
            self.note(f"QEMU pid {proc.pid} running")
            self.new_boot(cause)

    def _stop_vm(self):
        proc, qmp = self.proc, self.qmp
        if proc is None:
            with self.lock:
                self.power = "Off"
            return
        self.expected_exit.add(proc.pid)
        if proc.poll() is None and qmp is not None:
            try:
                qmp.execute("quit", timeout=3)
            except RuntimeError:
                pass
        self._kill(proc)
        if qmp:
            qmp.close()
        self._sync_console()
        with self.lock:
            if self.proc is proc:
                self.proc, self.qmp = None, None
            if self.power == "On":
                self.sel_add("Power Unit", SEL_POWER_UNIT, "Assert", "OK",
                             "The system powered off.", "SystemPowerOff")
            self.power = "Off"
            self.set_progress(BP_NONE)
            self.note(f"QEMU pid {proc.pid} stopped")

    @staticmethod
    def _kill(proc):
        try:
            proc.wait(timeout=3)
            return
        except subprocess.TimeoutExpired:
            pass
        proc.terminate()
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _watch_exit(self, proc):
        proc.wait()
        with self.lock:
            if proc.pid in self.expected_exit:
                self.expected_exit.discard(proc.pid)
                return
            if self.proc is proc:
                self.note(f"QEMU pid {proc.pid} exited on its own (status {proc.returncode})")
                if self.power == "On":
                    self.sel_add("Power Unit", SEL_POWER_UNIT, "Assert", "Warning",
                                 "The system lost power.", "SystemPowerLost")
                self.proc, self.qmp = None, None
                self.power = "Off"
                self.set_progress(BP_NONE)
                self.finish_pending("Exception", "Critical", "OperationFailed",
                                    "The system lost power.")

    def _on_event(self, proc, event, data):
        """QMP events, in the QMP reader thread: never call QMP from here."""
        with self.lock:
            if self.proc is not proc:
                return
            if event == "SHUTDOWN" and data.get("guest"):
                self.note(f"guest powered off ({data.get('reason')})")
                self.ops.put(("guest_off", None, None))
            elif event == "RESET" and data.get("guest"):
                recent = time.monotonic() - self.last_reset_mono < FIRMWARE_RESET_WINDOW
                if recent and self.boot_progress == BP_HW_DONE:
                    return  # the firmware re-initialising after our reset
                self.ops.put(("guest_reset", None, None))
            elif event == "POWERDOWN":
                pass

    def _op_guest_reset(self, cause, task):
        # The OS restarted the machine itself (e.g. `reboot`): a warm restart.
        self._sync_console()
        with self.lock:
            self.new_boot("guest_reset")
            if self.pending and self.pending["kind"] == "restart":
                self.finish_pending("Completed", "OK", "Success", "Successfully Completed Request")

    # -- the console -------------------------------------------------------------

    def _follow_console(self):
        while True:
            try:
                self._sync_console()
            except Exception:
                traceback.print_exc()
            time.sleep(0.05)

    def _sync_console(self):
        """Reads what the guest printed since last time and applies its markers."""
        with self.console_lock:
            try:
                with open(self.console_path, "rb") as f:
                    f.seek(self.console_offset)
                    data = f.read()
            except FileNotFoundError:
                return
            if not data:
                return
            self.console_offset += len(data)
            lines = (self.console_partial + data).split(b"\n")
            self.console_partial = lines.pop()
            for raw in lines:
                self._console_line(raw.decode("utf-8", "replace"))

    def _console_line(self, line):
        with self.lock:
            if self.power != "On":
                return
            if MARK_CLEAN_OFF in line:
                self.console_marks["clean_shutdown"] += 1
                self.note("console: guest shuts down cleanly")
            elif MARK_READY in line:
                self.console_marks["ready"] += 1
                self.set_progress(BP_OS_RUNNING)
                self.note("console: guest ready -> OSRunning")
            elif MARK_BOOT in line:
                self.console_marks["boot"] += 1
                self.set_progress(BP_OS_BOOT)
                self.note("console: guest booting -> OSBootStarted")

    def shutdown(self):
        try:
            self._stop_vm()
        except Exception:
            if self.proc and self.proc.poll() is None:
                self.proc.kill()


def etag_of(body, salt=0):
    data = json.dumps([salt, {k: v for k, v in body.items() if k != "@odata.etag"}],
                      sort_keys=True)
    return '"' + hashlib.sha256(data.encode()).hexdigest()[:16] + '"'


# ----------------------------------------------------------------------------
# The BMC: sessions, tasks, counters, routing.


class Session:
    def __init__(self, sid, user):
        self.id = str(sid)
        self.user = user
        self.token = secrets.token_hex(24)
        self.last_used = time.monotonic()

    @property
    def uri(self):
        return f"/redfish/v1/SessionService/Sessions/{self.id}"

    def resource(self):
        return {
            "@odata.id": self.uri,
            "@odata.type": "#Session.v1_6_0.Session",
            "Id": self.id,
            "Name": "User Session",
            "UserName": self.user,
            "SessionType": "Redfish",
            "Password": None,
        }


def new_counters():
    return {
        "requests": {},
        "auth_failures": 0,
        "resets": {},
        "resets_refused": {},
        "sessions": {"created": 0, "deleted": 0, "expired": 0, "open": 0, "refused_limit": 0},
        "patches": {},
        "patches_applied": 0,
        "precondition_failed": 0,
        "tasks": 0,
        "faults": {"status": 0, "hang": 0, "latency": 0, "silent": 0, "redirect": 0,
                   "body": 0, "content_type": 0},
        "boots": {},
    }


class Bmc:
    def __init__(self, args):
        self.args = args
        self.lock = threading.RLock()
        self.knobs = Knobs(BMC_KNOBS)
        self.counters = new_counters()
        self.sessions = {}       # id -> Session
        self.next_session = 1
        self.tasks = {}
        self.next_task = 1
        self.user = args.user
        self.password = args.password
        self.uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"rfsim:{args.port}"))
        # QEMU loads the e1000 boot ROM from ipxe-qemu (Debian keeps it here).
        self.pxe_rom = any(os.path.exists(f"{d}/efi-e1000.rom")
                           for d in ("/usr/lib/ipxe/qemu", "/usr/share/qemu"))
        self.systems = {}
        for i in range(1, args.systems + 1):
            s = System(self, i, args)
            self.systems[s.id] = s
        self.stopping = threading.Event()
        self.started = now_iso()
        self.silent_until = 0.0  # knob silent_ms, counted from when it is set

    def set_knobs(self, changes):
        """BMC knobs, all or none; silent_ms starts its window now."""
        self.knobs.update(changes)
        if "silent_ms" in changes:
            self.silent_until = time.monotonic() + self.knobs["silent_ms"] / 1000.0

    def count(self, bucket, system_id, key=None):
        c = self.counters[bucket]
        if key is None:
            c[system_id] = c.get(system_id, 0) + 1
        else:
            c.setdefault(system_id, {})
            c[system_id][key] = c[system_id].get(key, 0) + 1

    # -- auth ----------------------------------------------------------------

    def expire_sessions(self):
        limit = self.knobs["session_timeout_s"]
        now = time.monotonic()
        for sid in [s.id for s in self.sessions.values() if now - s.last_used > limit]:
            del self.sessions[sid]
            self.counters["sessions"]["expired"] += 1
        self.counters["sessions"]["open"] = len(self.sessions)

    def authenticate(self, headers):
        """The session or user a request acts as; raises 401 otherwise."""
        self.expire_sessions()
        token = headers.get("X-Auth-Token")
        if token:
            for s in self.sessions.values():
                if hmac.compare_digest(s.token, token):
                    s.last_used = time.monotonic()
                    return s
            self.counters["auth_failures"] += 1
            raise no_session()
        auth = headers.get("Authorization", "")
        if auth.startswith("Basic ") and self.knobs["basic_auth"]:
            try:
                user, _, pw = base64.b64decode(auth[6:].strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                user, pw = "", None
            if self.credentials_ok(user, pw):
                return None
        self.counters["auth_failures"] += 1
        raise no_session()

    def credentials_ok(self, user, pw):
        return (isinstance(user, str) and isinstance(pw, str)
                and hmac.compare_digest(user.encode(), self.user.encode())
                and hmac.compare_digest(pw.encode(), self.password.encode()))

    # -- resources -------------------------------------------------------------

    def service_root(self):
        return {
            "@odata.id": "/redfish/v1/",
            "@odata.type": "#ServiceRoot.v1_15_0.ServiceRoot",
            "Id": "RootService",
            "Name": "rfsim Redfish service",
            "RedfishVersion": "1.17.0",
            "UUID": self.uuid,
            "Vendor": "rack-agent bench",
            "Systems": {"@odata.id": "/redfish/v1/Systems"},
            "Chassis": {"@odata.id": "/redfish/v1/Chassis"},
            "Managers": {"@odata.id": "/redfish/v1/Managers"},
            "SessionService": {"@odata.id": "/redfish/v1/SessionService"},
            "TaskService": {"@odata.id": "/redfish/v1/TaskService"},
            "Links": {"Sessions": {"@odata.id": "/redfish/v1/SessionService/Sessions"}},
            "ProtocolFeaturesSupported": {
                "ExpandQuery": {"ExpandAll": False, "Levels": False, "Links": False,
                                "NoLinks": self.knobs["expand"]},
                "FilterQuery": False, "SelectQuery": False, "OnlyMemberQuery": False,
            },
        }

    @staticmethod
    def collection(uri, odata_type, name, members):
        return {
            "@odata.id": uri,
            "@odata.type": f"#{odata_type}.{odata_type}",
            "Name": name,
            "Members@odata.count": len(members),
            "Members": [{"@odata.id": m} for m in members],
        }

    def manager(self):
        return {
            "@odata.id": "/redfish/v1/Managers/BMC",
            "@odata.type": "#Manager.v1_19_0.Manager",
            "Id": "BMC",
            "Name": "rfsim BMC",
            "ManagerType": "BMC",
            "Manufacturer": "rack-agent bench",
            "Model": "rfsim BMC",
            "FirmwareVersion": "rfsim-1.0",
            "LogServices": {"@odata.id": "/redfish/v1/Managers/BMC/LogServices"},
            "UUID": self.uuid,
            "Status": {"State": "Enabled", "Health": "OK"},
            "Links": {
                "ManagerForServers": [{"@odata.id": f"/redfish/v1/Systems/{s}"} for s in self.systems],
                "ManagerForChassis": [{"@odata.id": "/redfish/v1/Chassis/Chassis1"}],
            },
        }

    def chassis(self):
        on = any(s.power == "On" for s in self.systems.values())
        return {
            "@odata.id": "/redfish/v1/Chassis/Chassis1",
            "@odata.type": "#Chassis.v1_23_0.Chassis",
            "Id": "Chassis1",
            "Name": "rfsim enclosure",
            "ChassisType": "Enclosure",
            "PowerState": "On" if on else "Off",
            "Status": {"State": "Enabled", "Health": "OK"},
            "Links": {
                "ComputerSystems": [{"@odata.id": f"/redfish/v1/Systems/{s}"} for s in self.systems],
                "ManagedBy": [{"@odata.id": "/redfish/v1/Managers/BMC"}],
                "Contains": [{"@odata.id": f"/redfish/v1/Chassis/{s}"} for s in self.systems],
            },
        }

    def manager_log(self):
        """The BMC's own log (LogEntryType Event): not the SEL, which a client
        should prefer."""
        uri = "/redfish/v1/Managers/BMC/LogServices/Log"
        return {
            "@odata.id": uri,
            "@odata.type": "#LogService.v1_5_0.LogService",
            "Id": "Log",
            "Name": "BMC Event Log",
            "LogEntryType": "Event",
            "ServiceEnabled": True,
            "Entries": {"@odata.id": f"{uri}/Entries"},
        }

    def manager_log_entries(self):
        uri = "/redfish/v1/Managers/BMC/LogServices/Log/Entries"
        entry = {"@odata.id": f"{uri}/1", "@odata.type": "#LogEntry.v1_15_0.LogEntry",
                 "Id": "1", "Name": "BMC event 1", "EntryType": "Event",
                 "Created": self.started, "Severity": "OK",
                 "Message": "The BMC started.", "MessageId": "RackBench.1.0.BmcStarted"}
        return {"@odata.id": uri, "@odata.type": "#LogEntryCollection.LogEntryCollection",
                "Name": "BMC Event Log Entries", "Members@odata.count": 1, "Members": [entry]}

    def session_service(self):
        return {
            "@odata.id": "/redfish/v1/SessionService",
            "@odata.type": "#SessionService.v1_1_9.SessionService",
            "Id": "SessionService",
            "Name": "Session Service",
            "ServiceEnabled": True,
            "SessionTimeout": self.knobs["session_timeout_s"],
            "Sessions": {"@odata.id": "/redfish/v1/SessionService/Sessions"},
        }

    def task_service(self):
        return {
            "@odata.id": "/redfish/v1/TaskService",
            "@odata.type": "#TaskService.v1_2_0.TaskService",
            "Id": "TaskService",
            "Name": "Task Service",
            "ServiceEnabled": True,
            "Tasks": {"@odata.id": "/redfish/v1/TaskService/Tasks"},
        }

    # -- request handling --------------------------------------------------------

    def handle(self, method, path, headers, body, query=""):
        """Returns (status, headers, json-or-None). Fault knobs were applied."""
        path = path.rstrip("/") or "/"
        if path in ("/redfish", ):
            if method != "GET":
                raise method_not_allowed(path, ["GET"])
            return 200, {}, {"v1": "/redfish/v1/"}
        if path == "/redfish/v1":
            if method != "GET":
                raise method_not_allowed(path, ["GET"])
            return 200, {}, self.service_root()
        sessions = "/redfish/v1/SessionService/Sessions"
        if path == sessions and method == "POST":
            return self.login(body)
        with self.lock:
            session = self.authenticate(headers)
            return self.route(method, path, headers, body, session, query)

    def route(self, method, path, headers, body, session, query=""):
        def get_only(resource):
            if method != "GET":
                raise method_not_allowed(path, ["GET"])
            return 200, {}, resource

        if path == "/redfish/v1/Systems":
            return get_only(self.collection(path, "ComputerSystemCollection",
                                            "Computer System Collection",
                                            [f"{path}/{s}" for s in self.systems]))
        m = re.fullmatch(r"/redfish/v1/Systems/([^/]+)(/.*)?", path)
        if m:
            system = self.systems.get(m.group(1))
            if system is None:
                raise not_found(path)
            rest = m.group(2) or ""
            if rest == "":
                if method == "GET":
                    return 200, {}, system.resource()
                if method == "PATCH":
                    return self.patch_system(system, headers, body)
                raise method_not_allowed(path, ["GET", "PATCH"])
            if rest == "/ResetActionInfo":
                if system.knobs["reset_allowable"] != "action_info":
                    raise not_found(path)
                return get_only(system.action_info())
            if rest == "/Actions/ComputerSystem.Reset":
                if method != "POST":
                    raise method_not_allowed(path, ["POST"])
                return self.reset(system, body)
            if rest == "/LogServices":
                return get_only(system.log_services())
            if rest == "/LogServices/SEL":
                return get_only(system.sel_service())
            if rest == "/LogServices/SEL/Entries":
                return get_only(system.sel_page(query_skip(query)))
            if rest == "/LogServices/SEL/Actions/LogService.ClearLog":
                if method != "POST":
                    raise method_not_allowed(path, ["POST"])
                system.sel.clear()
                system.note("SEL cleared (ClearLog)")
                return 204, {}, None
            m = re.fullmatch(r"/LogServices/SEL/Entries/([^/]+)", rest)
            if m:
                entry = next((e for e in system.sel if e["Id"] == m.group(1)), None)
                if entry is None:
                    raise not_found(path)
                return get_only(entry)
            raise not_found(path)
        if path == "/redfish/v1/Managers":
            return get_only(self.collection(path, "ManagerCollection", "Manager Collection",
                                            ["/redfish/v1/Managers/BMC"]))
        if path == "/redfish/v1/Managers/BMC":
            return get_only(self.manager())
        if path == "/redfish/v1/Managers/BMC/LogServices":
            return get_only(self.collection(path, "LogServiceCollection", "Log Services",
                                            [f"{path}/Log"]))
        if path == "/redfish/v1/Managers/BMC/LogServices/Log":
            return get_only(self.manager_log())
        if path == "/redfish/v1/Managers/BMC/LogServices/Log/Entries":
            return get_only(self.manager_log_entries())
        if path == "/redfish/v1/Chassis":
            return get_only(self.collection(path, "ChassisCollection", "Chassis Collection",
                                            ["/redfish/v1/Chassis/Chassis1"]
                                            + [f"/redfish/v1/Chassis/{s}" for s in self.systems]))
        if path == "/redfish/v1/Chassis/Chassis1":
            return get_only(self.chassis())
        m = re.fullmatch(r"/redfish/v1/Chassis/([^/]+)(/.*)?", path)
        if m and m.group(1) in self.systems:
            system = self.systems[m.group(1)]
            rest = m.group(2) or ""
            mode = system.knobs["sensors"]
            if rest == "":
                return get_only(system.chassis_resource())
            if rest == "/Sensors" and mode in ("both", "sensors"):
                expand = self.knobs["expand"] and query_expand(query)
                return get_only(system.sensors_collection(expand))
            sm = re.fullmatch(r"/Sensors/([^/]+)", rest)
            if sm and mode in ("both", "sensors"):
                if sm.group(1) == "Broken" and system.knobs["malformed_sensor"]:
                    return get_only(system.malformed_sensor())
                if sm.group(1) in system.sensors:
                    return get_only(system.sensor_resource(sm.group(1)))
            if rest in ("/Thermal", "/Power") and mode in ("both", "legacy"):
                return get_only(system.legacy_resource(rest[1:]))
            raise not_found(path)
        if path == "/redfish/v1/SessionService":
            return get_only(self.session_service())
        if path == "/redfish/v1/SessionService/Sessions":
            if method != "GET":
                raise method_not_allowed(path, ["GET", "POST"])
            return 200, {}, self.collection(path, "SessionCollection", "Session Collection",
                                            [s.uri for s in self.sessions.values()])
        m = re.fullmatch(r"/redfish/v1/SessionService/Sessions/([^/]+)", path)
        if m:
            s = self.sessions.get(m.group(1))
            if s is None:
                raise not_found(path)
            if method == "GET":
                return 200, {}, s.resource()
            if method == "DELETE":
                del self.sessions[s.id]
                self.counters["sessions"]["deleted"] += 1
                self.counters["sessions"]["open"] = len(self.sessions)
                log(f"session {s.id} deleted")
                return 204, {}, None
            raise method_not_allowed(path, ["GET", "DELETE"])
        if path == "/redfish/v1/TaskService":
            return get_only(self.task_service())
        if path == "/redfish/v1/TaskService/Tasks":
            return get_only(self.collection(path, "TaskCollection", "Task Collection",
                                            [t.uri for t in self.tasks.values()]))
        m = re.fullmatch(r"/redfish/v1/TaskService/(Tasks|TaskMonitors)/([^/]+)", path)
        if m:
            task = self.tasks.get(m.group(2))
            if task is None:
                raise not_found(path)
            if method != "GET":
                raise method_not_allowed(path, ["GET"])
            body = task.resource()
            if m.group(1) == "Tasks":
                return 200, {}, body
            # A task monitor answers 202 while the operation runs, then the
            # operation's outcome (here the finished task).
            if body["TaskState"] == "Running":
                return 202, {"Location": task.monitor, "Retry-After": "1"}, body
            return 200, {}, body
        raise not_found(path)

    def login(self, body):
        try:
            req = json.loads(body or b"{}")
        except ValueError:
            raise RedfishError(400, "MalformedJSON",
                               "The request body submitted was malformed JSON and could not be "
                               "parsed by the receiving service.") from None
        if not isinstance(req, dict):
            req = {}
        for prop in ("UserName", "Password"):
            if not isinstance(req.get(prop), str):
                raise RedfishError(400, "PropertyMissing",
                                   f"The property {prop} is a required property and must be "
                                   "included in the request.", [prop],
                                   "Ensure that the property is in the request body and has a "
                                   "valid value and resubmit the request if the operation failed.")
        with self.lock:
            if not self.credentials_ok(req["UserName"], req["Password"]):
                self.counters["auth_failures"] += 1
                raise RedfishError(401, "ResourceAtUriUnauthorized",
                                   "While accessing the resource at "
                                   "/redfish/v1/SessionService/Sessions, the service received an "
                                   "authorization error: invalid user name or password.",
                                   ["/redfish/v1/SessionService/Sessions", "invalid credentials"],
                                   "Ensure that the appropriate access is provided for the "
                                   "service in order for it to access the URI.")
            self.expire_sessions()
            if len(self.sessions) >= self.knobs["session_limit"]:
                self.counters["sessions"]["refused_limit"] += 1
                log(f"login refused: {len(self.sessions)} sessions open, limit "
                    f"{self.knobs['session_limit']}")
                raise RedfishError(self.knobs["session_limit_status"], "SessionLimitExceeded",
                                   "The session establishment failed due to the number of "
                                   "simultaneous sessions exceeding the limit of the "
                                   "implementation.", [],
                                   "Reduce the number of other sessions before trying to "
                                   "establish the session or increase the limit of simultaneous "
                                   "sessions (if supported).")
            s = Session(self.next_session, req["UserName"])
            self.next_session += 1
            self.sessions[s.id] = s
            self.counters["sessions"]["created"] += 1
            self.counters["sessions"]["open"] = len(self.sessions)
            log(f"session {s.id} created ({len(self.sessions)} open)")
            return 201, {"X-Auth-Token": s.token, "Location": s.uri}, s.resource()

    def reset(self, system, body):
        try:
            req = json.loads(body or b"{}")
        except ValueError:
            raise RedfishError(400, "MalformedJSON",
                               "The request body submitted was malformed JSON and could not be "
                               "parsed by the receiving service.") from None
        reset_type = req.get("ResetType") if isinstance(req, dict) else None
        if reset_type is None:
            self.count("resets_refused", system.id, "<missing>")
            raise RedfishError(400, "ActionParameterMissing",
                               "The action ComputerSystem.Reset requires the parameter ResetType "
                               "to be present in the request body.",
                               ["ComputerSystem.Reset", "ResetType"],
                               "Supply the action with the required parameter in the request "
                               "body when the request is resubmitted.")
        if reset_type not in system.allowed_resets():
            self.count("resets_refused", system.id, str(reset_type))
            status = system.knobs["unsupported_status"]
            if status == 501 and reset_type in EXTRA_RESETS:
                raise RedfishError(501, "ActionNotSupported",
                                   f"The action ComputerSystem.Reset with ResetType {reset_type} "
                                   "is not supported by the resource.",
                                   ["ComputerSystem.Reset"],
                                   "The action supplied cannot be resubmitted to the "
                                   "implementation.  Perhaps the action was invalid, the wrong "
                                   "resource was the target or the implementation documentation "
                                   "may be of assistance.")
            raise RedfishError(400, "ActionParameterValueNotInList",
                               f"The value '{reset_type}' for the parameter ResetType in the "
                               "action ComputerSystem.Reset is not in the list of acceptable "
                               "values.", [str(reset_type), "ResetType", "ComputerSystem.Reset"],
                               "Choose a value from the enumeration list that the implementation "
                               "can support and resubmit the request if the operation failed.")
        if system.knobs["task_stuck"]:
            # Accepted with a task that never ends, and nothing is done: a BMC
            # whose operation hangs.
            task = Task(self, self.next_task, system.id, reset_type, 0)
            self.next_task += 1
            system.note(f"Reset {reset_type} accepted into task {task.id}, which never ends "
                        "(task_stuck); nothing is done")
            self.count("resets", system.id, reset_type)
            self.tasks[task.id] = task
            self.counters["tasks"] += 1
            return 202, {"Location": task.monitor}, task.resource()
        task = None
        if system.knobs["reset_response"] == 202:
            task = Task(self, self.next_task, system.id, reset_type, system.knobs["task_min_ms"])
            self.next_task += 1
        try:
            system.reset(reset_type, task)
        except RedfishError:
            self.count("resets_refused", system.id, reset_type)
            raise
        self.count("resets", system.id, reset_type)
        if task is None:
            return 204, {}, None
        self.tasks[task.id] = task
        self.counters["tasks"] += 1
        return 202, {"Location": task.monitor}, task.resource()

    def patch_system(self, system, headers, body):
        self.count("patches", system.id)
        current = system.resource()["@odata.etag"]
        if_match = headers.get("If-Match")
        if if_match is None and system.knobs["require_if_match"]:
            self.counters["precondition_failed"] += 1
            status = system.knobs["missing_if_match_status"]
            raise RedfishError(status, "PreconditionRequired",
                               "A precondition header or annotation is required to change the "
                               "resource.", [],
                               "Try the request again with an If-Match header carrying the "
                               "resource's current ETag.")
        if if_match is not None:
            tags = [t.strip() for t in if_match.split(",")]
            tags = [t[2:] if t.startswith("W/") else t for t in tags]
            stale = "*" not in tags and current not in tags
            if system.knobs["precondition_fail_times"] > 0:
                # As if the resource changed between the client's GET and PATCH.
                system.knobs["precondition_fail_times"] -= 1
                system.etag_salt += 1
                stale = True
            if stale:
                self.counters["precondition_failed"] += 1
                raise RedfishError(412, "PreconditionFailed",
                                   "The ETag supplied did not match the ETag required to change "
                                   "this resource.", [],
                                   "Try the operation again using the appropriate ETag.",
                                   {"ETag": system.resource()["@odata.etag"]})
        try:
            req = json.loads(body or b"{}")
        except ValueError:
            raise RedfishError(400, "MalformedJSON",
                               "The request body submitted was malformed JSON and could not be "
                               "parsed by the receiving service.") from None
        if not isinstance(req, dict) or not req:
            raise RedfishError(400, "EmptyJSON",
                               "The request body submitted contained an empty JSON object and "
                               "the service is unable to process it.")
        for prop in req:
            if prop != "Boot":
                known = prop in system.resource()
                raise RedfishError(400, "PropertyNotWritable" if known else "PropertyUnknown",
                                   f"The property {prop} is a read only property and cannot be "
                                   "assigned a value." if known else
                                   f"The property {prop} is not in the list of valid properties "
                                   "for the resource.", [prop],
                                   "Remove the property from the request body and resubmit the "
                                   "request if the operation failed.")
        boot = req["Boot"]
        if not isinstance(boot, dict):
            raise RedfishError(400, "PropertyValueTypeError",
                               "The value for the property Boot is of a different type than the "
                               "property can accept.", ["Boot"])
        allowed = {
            "BootSourceOverrideTarget": system.knobs["boot_targets"],
            "BootSourceOverrideEnabled": BOOT_ENABLED,
            "BootSourceOverrideMode": ["Legacy"],
        }
        for prop, value in boot.items():
            if prop not in allowed:
                raise RedfishError(400, "PropertyUnknown",
                                   f"The property Boot/{prop} is not in the list of valid "
                                   "properties for the resource.", [f"Boot/{prop}"])
            if value not in allowed[prop]:
                raise RedfishError(400, "PropertyValueNotInList",
                                   f"The value '{value}' for the property {prop} is not in the "
                                   "list of acceptable values.", [str(value), prop],
                                   "Choose a value from the enumeration list that the "
                                   "implementation can support and resubmit the request if the "
                                   "operation failed.")
        if "BootSourceOverrideTarget" in boot:
            system.boot_target = boot["BootSourceOverrideTarget"]
        if "BootSourceOverrideEnabled" in boot:
            system.boot_enabled = boot["BootSourceOverrideEnabled"]
        if "BootSourceOverrideMode" in boot:
            system.boot_mode = boot["BootSourceOverrideMode"]
        self.counters["patches_applied"] += 1
        system.note(f"boot override set: {system.boot_target} / {system.boot_enabled}")
        return 200, {}, system.resource()

    # -- the control endpoint -------------------------------------------------------

    def control(self, method, path, body):
        path = path.rstrip("/")
        try:
            req = json.loads(body) if body else {}
        except ValueError:
            return 400, {"error": "the body is not JSON"}
        with self.lock:
            if path == "/control" and method == "GET":
                return 200, {"knobs": self.knobs.snapshot(), "counters": self.counters_view(),
                             "systems": {k: s.control_view() for k, s in self.systems.items()}}
            if path == "/control/knobs":
                if method == "POST":
                    try:
                        self.set_knobs(req)
                    except ValueError as e:
                        return 400, {"error": str(e)}
                    log(f"BMC knobs: {req}")
                return 200, self.knobs.snapshot()
            if path == "/control/counters":
                if method == "DELETE":
                    self.counters = new_counters()
                    self.counters["sessions"]["open"] = len(self.sessions)
                return 200, self.counters_view()
            if path == "/control/systems" and method == "GET":
                return 200, sorted(self.systems)
            m = re.fullmatch(r"/control/systems/([^/]+)(/knobs|/console|/sensors|/sel|/power_button)?",
                             path)
            if m and m.group(1) in self.systems:
                system = self.systems[m.group(1)]
                if m.group(2) == "/sensors":
                    if method == "POST":
                        try:
                            system.set_sensors(req)
                        except ValueError as e:
                            return 400, {"error": str(e)}
                    return 200, {sid: dict(s, health=system.sensor_health(s))
                                 for sid, s in system.sensors.items()}
                if m.group(2) == "/sel":
                    if method == "DELETE":
                        system.sel.clear()
                        system.note("SEL cleared (control)")
                    return 200, list(system.sel)
                if m.group(2) == "/power_button":
                    if method != "POST":
                        return 405, {"error": "POST /control/systems/<id>/power_button"}
                    if not isinstance(req, dict) or set(req) - {"hold"}:
                        return 400, {"error": 'the body is {} or {"hold": true}'}
                    system.press_power_button(bool(req.get("hold")))
                    return 200, system.control_view()
                if m.group(2) == "/knobs":
                    if method == "POST":
                        try:
                            system.knobs.update(req)
                        except ValueError as e:
                            return 400, {"error": str(e)}
                        system.note(f"knobs: {req}")
                    return 200, system.knobs.snapshot()
                if m.group(2) == "/console":
                    with open(system.console_path, "rb") as f:
                        return 200, f.read().decode("utf-8", "replace")
                return 200, system.control_view()
            return 404, {"error": f"no control resource {method} {path}"}

    def counters_view(self):
        self.expire_sessions()
        return json.loads(json.dumps(self.counters))

    def shutdown(self):
        self.stopping.set()
        threads = [threading.Thread(target=s.shutdown) for s in self.systems.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=10)


def query_params(query):
    out = {}
    for part in query.split("&"):
        if part:
            k, _, v = part.partition("=")
            out[urllib.parse.unquote(k)] = urllib.parse.unquote(v)
    return out


def query_skip(query):
    try:
        return max(0, int(query_params(query).get("$skip", "0")))
    except ValueError:
        raise RedfishError(400, "QueryParameterValueTypeError",
                           "The value for the parameter $skip is of a different type than the "
                           "parameter can accept.", ["$skip"]) from None


def query_expand(query):
    """$expand=. (with or without $levels=1): the members inline."""
    v = query_params(query).get("$expand")
    return v is not None and v.split("(", 1)[0] in (".", "*")


def method_not_allowed(path, allowed):
    return RedfishError(405, "OperationNotAllowed",
                        "The HTTP method is not allowed on this resource.", [],
                        "None.", {"Allow": ", ".join(allowed)})


# ----------------------------------------------------------------------------
# HTTPS.


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "rfsim/1.0"

    def version_string(self):
        return self.server_version
    timeout = 120  # idle keep-alive connections are closed after this

    def log_message(self, fmt, *args):
        if self.server.verbose:
            log(f"{self.client_address[0]} {fmt % args}")

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_HEAD(self):
        self.dispatch("HEAD")

    def reply(self, status, headers, payload, content_type="application/json; charset=utf-8",
              shape=None):
        """`shape`: the answer-shaping fault knobs in force ({"content_type",
        "body"}), for /redfish answers only."""
        shape = shape or {}
        if payload is None:
            data = b""
        elif isinstance(payload, (bytes, str)):
            data = payload.encode() if isinstance(payload, str) else payload
            content_type = "text/plain; charset=utf-8"
        else:
            data = json.dumps(payload, indent=1).encode()
        if data and shape.get("content_type"):
            content_type = shape["content_type"]
        length = len(data)
        if data and shape.get("body") == "truncated":
            # A well-framed answer whose JSON stops halfway.
            data = data[: len(data) // 2]
            length = len(data)
        elif data and shape.get("body") == "short_read":
            # The full length announced, half of it sent, then the connection
            # closes.
            data = data[: len(data) // 2]
            self.close_connection = True
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if data:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.send_header("OData-Version", "4.0")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        if data and self.command != "HEAD":
            self.wfile.write(data)

    def dispatch(self, method):
        bmc = self.server.bmc
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        body = self.rfile.read(length) if length > 0 else b""
        path = self.path.split("?", 1)[0]
        if path.startswith("/control"):
            if not self.client_address[0].startswith("127."):
                self.reply(403, {}, {"error": "the control endpoint answers loopback only"})
                return
            status, payload = bmc.control(method, path, body)
            self.reply(status, {}, payload)
            return
        if not path.startswith("/redfish"):
            self.reply(404, {}, not_found(path).body())
            return
        with bmc.lock:
            bmc.counters["requests"][method] = bmc.counters["requests"].get(method, 0) + 1
        if self.apply_faults(bmc, path):
            return
        shape = self.answer_shape(bmc, path)
        try:
            query = self.path.split("?", 1)[1] if "?" in self.path else ""
            status, headers, payload = bmc.handle(method, path, self.headers, body, query)
        except RedfishError as e:
            status, headers, payload = e.status, e.headers, e.body()
        except Exception as e:  # a bug: say so in the Redfish way
            traceback.print_exc()
            status, headers, payload = 500, {}, error_body(
                "InternalError", f"The request failed due to an internal service error: {e}")
        if isinstance(payload, dict) and "@odata.etag" in payload and method in ("GET", "PATCH"):
            headers = dict(headers, ETag=payload["@odata.etag"])
        if self.reset_unanswered(bmc, method, path, status):
            return
        self.reply(status, headers, payload, shape=shape)

    def reset_unanswered(self, bmc, method, path, status):
        """Knob reset_unanswered: an accepted Reset is carried out and its
        answer never sent (held until the knob is cleared, then dropped)."""
        m = re.fullmatch(r"/redfish/v1/Systems/([^/]+)/Actions/ComputerSystem\.Reset/?", path)
        if method != "POST" or not m or status >= 300 or m.group(1) not in bmc.systems:
            return False
        knobs = bmc.systems[m.group(1)].knobs
        with bmc.lock:
            if not knobs["reset_unanswered"]:
                return False
            bmc.counters["faults"]["hang"] += 1
        while not bmc.stopping.is_set():
            with bmc.lock:
                if not knobs["reset_unanswered"]:
                    break
            time.sleep(0.1)
        self.close_connection = True
        return True

    @staticmethod
    def fault_scopes(bmc, path):
        """The knob sets that apply to `path`: the BMC's, then its system's."""
        scopes = [bmc.knobs]
        m = re.match(r"/redfish/v1/Systems/([^/]+)", path)
        if m and m.group(1) in bmc.systems:
            scopes.append(bmc.systems[m.group(1)].knobs)
        return scopes

    def answer_shape(self, bmc, path):
        """content_type / body knobs (truncated, short_read) for the answer;
        a system's knob wins over the BMC's."""
        shape = {}
        with bmc.lock:
            for k in self.fault_scopes(bmc, path):
                for name in ("content_type", "body"):
                    if k[name] is not None:
                        shape[name] = k[name]
                        bmc.counters["faults"][name] += 1
        return shape

    def apply_faults(self, bmc, path):
        """Latency, a forced status, a hang: the BMC's knobs, then the system's.
        Returns True when the request was answered (or will never be)."""
        with bmc.lock:
            scopes = self.fault_scopes(bmc, path)
            latency = sum(k["latency_ms"] for k in scopes)
            redirect = next((k["redirect"] for k in reversed(scopes) if k["redirect"]), None)
            html = any(k["body"] == "html" for k in scopes)
            hang = [k for k in scopes if k["hang"]]
            forced = None
            for k in scopes:
                if k["status"] is not None:
                    forced = k["status"]
                    if k["status_times"] is not None:
                        k["status_times"] -= 1
                        if k["status_times"] <= 0:
                            k["status"], k["status_times"] = None, None
                    break
            if latency:
                bmc.counters["faults"]["latency"] += 1
            if hang:
                bmc.counters["faults"]["hang"] += 1
            elif forced is not None:
                bmc.counters["faults"]["status"] += 1
            elif redirect:
                bmc.counters["faults"]["redirect"] += 1
            elif html:
                bmc.counters["faults"]["body"] += 1
        if latency:
            time.sleep(latency / 1000.0)
        with bmc.lock:
            until = bmc.silent_until
            if time.monotonic() < until:
                bmc.counters["faults"]["silent"] += 1
        if time.monotonic() < until:
            # Knob silent_ms on a connection opened before the silence: a BMC
            # that stops talking stops on every connection, so the request
            # is held unanswered until the window ends, then dropped.
            while time.monotonic() < until and not bmc.stopping.is_set():
                time.sleep(0.05)
            self.close_connection = True
            return True
        if hang:
            # Accept and never answer: hold the connection until the knob is
            # cleared (or the simulator stops), then drop it unanswered.
            while not bmc.stopping.is_set():
                with bmc.lock:
                    if not any(k["hang"] for k in hang):
                        break
                time.sleep(0.1)
            self.close_connection = True
            return True
        if forced is not None:
            ids = {503: "ServiceTemporarilyUnavailable", 500: "InternalError"}
            msg_id = ids.get(forced, "GeneralError")
            headers = {"Retry-After": "1"} if forced == 503 else {}
            if forced == 401:
                headers["WWW-Authenticate"] = 'Basic realm="rfsim"'
            self.reply(forced, headers, error_body(
                msg_id, f"rfsim answers HTTP {forced} to every request (fault knob 'status')."))
            return True
        if redirect:
            # Elsewhere, same path: a BMC (or a proxy in front of it) sending
            # the client, and its credentials, to another host.
            self.reply(307, {"Location": redirect + self.path}, None)
            return True
        if html:
            # A web page where Redfish JSON should be: a login portal, a proxy's
            # error page.
            page = ("<!DOCTYPE html>\n<html><head><title>BMC Login</title></head>"
                    "<body><form action=\"/login\">Please log in.</form></body></html>\n")
            self.reply(200, {}, page, shape={"content_type": "text/html; charset=utf-8"})
            return True
        return False


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, addr, bmc, tls, verbose):
        self.bmc = bmc
        self.tls = tls
        self.verbose = verbose
        super().__init__(addr, Handler)

    def finish_request(self, request, client_address):
        # The TLS handshake runs in the connection's own thread, so a client
        # that never completes one cannot stall the accept loop.
        request.settimeout(30)
        # Headers and body leave in separate writes: without this, Nagle holds
        # the body back until the client's delayed ACK (~40 ms per request).
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.bmc.lock:
            until = self.bmc.silent_until
            if time.monotonic() < until:
                self.bmc.counters["faults"]["silent"] += 1
        if time.monotonic() < until:
            # Knob silent_ms: the connection is accepted and nothing is ever
            # said, not even the TLS handshake, until the time is up; then it
            # is closed unanswered. (The control endpoint shares the port, so
            # it is silent too: the window ends by itself.)
            while time.monotonic() < until and not self.bmc.stopping.is_set():
                time.sleep(0.05)
            return
        try:
            conn = self.tls.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as e:
            if self.verbose:
                log(f"TLS handshake with {client_address[0]} failed: {e}")
            return
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, ssl.SSLError, TimeoutError, socket.timeout)):
            return
        super().handle_error(request, client_address)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", required=True, help="run directory (consoles, QMP sockets, PIDs)")
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--systems", type=int, default=1)
    p.add_argument("--user", default="admin")
    p.add_argument("--password-file", required=True)
    p.add_argument("--guest", choices=["none", "acpi"], default="none",
                   help="none: an OS-less SeaBIOS VM (ignores ACPI); acpi: the hil-tests/guest "
                        "image, which shuts down on the power button")
    p.add_argument("--guest-args", default=None,
                   help="QEMU arguments that boot the ACPI guest, one per line (default: the "
                        "output of hil-tests/guest/qemu-args.sh)")
    p.add_argument("--accel", default="tcg", help="comma-separated -accel values (default tcg)")
    p.add_argument("--memory", type=int, default=128, help="MiB per VM")
    p.add_argument("--qemu", default="qemu-system-x86_64")
    p.add_argument("--power-on", action="store_true", help="power every system on at start")
    p.add_argument("--knobs", default="{}", help="BMC knobs as JSON, applied at start")
    p.add_argument("--system-knobs", default="{}",
                   help="system knobs as JSON, applied to every system at start")
    p.add_argument("--verbose", action="store_true", help="log every HTTP request")
    args = p.parse_args()
    args.dir = os.path.abspath(args.dir)
    with open(args.password_file) as f:
        args.password = f.read().strip()
    text, args.guest_args = args.guest_args, []
    if args.guest == "acpi":
        if text is None:
            script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "guest",
                                  "qemu-args.sh")
            if not os.path.exists(script):
                sys.exit(f"rfsim: --guest acpi needs {os.path.normpath(script)} (the guest "
                         "image, branch guest) or --guest-args")
            out = subprocess.run(["bash", script], capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"rfsim: {script} failed: {out.stderr.strip()}")
            text = out.stdout
        # One argument per line (an argument may contain spaces: -append's).
        args.guest_args = [line for line in text.splitlines() if line != ""]

    bmc = Bmc(args)
    try:
        bmc.set_knobs(json.loads(args.knobs))
        for s in bmc.systems.values():
            s.knobs.update(json.loads(args.system_knobs))
    except ValueError as e:
        sys.exit(f"rfsim: {e}")
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.minimum_version = ssl.TLSVersion.TLSv1_2
    tls.load_cert_chain(args.cert, args.key)
    server = Server(("127.0.0.1", args.port), bmc, tls, args.verbose)

    def stop(signum, frame):
        log(f"signal {signum}: stopping")
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.power_on:
        with bmc.lock:
            for s in bmc.systems.values():
                s.reset("On", None)
    log(f"{args.systems} system(s), guest {args.guest}, https://127.0.0.1:{args.port}/redfish/v1/")
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        bmc.shutdown()
        server.server_close()
        log("stopped")


if __name__ == "__main__":
    main()
