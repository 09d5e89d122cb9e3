#!/usr/bin/env python3
"""Prints how long rfsim takes to answer and to carry out resets.

Usage: timings.py DIR [--system sys1] [--rounds 3]
DIR is a running simulator's directory (start.sh DIR PORT ...); the system
must be Off at the start and is left Off. With the ACPI guest (start.sh ...
--guest acpi) it also times GracefulRestart and GracefulShutdown and the
guest's boot to OSRunning. A benchmark, not a test: it prints figures.
"""

import argparse
import base64
import http.client
import json
import os
import ssl
import statistics
import time


class Client:
    def __init__(self, d):
        self.port = int(open(os.path.join(d, "port")).read())
        pw = open(os.path.join(d, "password")).read().strip()
        self.auth = "Basic " + base64.b64encode(f"admin:{pw}".encode()).decode()
        self.ctx = ssl.create_default_context(cafile=os.path.join(d, "cert.pem"))
        self.conn = None

    def request(self, method, path, body=None):
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx,
                                                        timeout=30)
            try:
                headers = {"Authorization": self.auth}
                data = None
                if body is not None:
                    data = json.dumps(body).encode()
                    headers["Content-Type"] = "application/json"
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                raw = resp.read()
                return resp.status, (json.loads(raw) if raw else None)
            except (http.client.HTTPException, OSError):
                self.conn = None
                if attempt:
                    raise

    def system(self, sid):
        return self.request("GET", f"/redfish/v1/Systems/{sid}")[1]

    def reset(self, sid, reset_type):
        t = time.monotonic()
        status, _ = self.request("POST", f"/redfish/v1/Systems/{sid}/Actions/ComputerSystem.Reset",
                                 {"ResetType": reset_type})
        if status not in (200, 202, 204):
            raise SystemExit(f"Reset {reset_type}: HTTP {status}")
        return time.monotonic() - t

    def wait(self, sid, cond, timeout=120):
        t = time.monotonic()
        off_seen = False
        while True:
            s = self.system(sid)
            off_seen |= s["PowerState"] == "Off"
            if cond(s):
                return time.monotonic() - t, off_seen
            if time.monotonic() - t > timeout:
                raise SystemExit(f"timed out; last: {s['PowerState']} {s.get('BootProgress')}")
            time.sleep(0.02)


def row(name, values):
    ms = [v * 1000 for v in values]
    print(f"| {name} | {len(ms)} | {statistics.mean(ms):.1f} ms | {statistics.median(ms):.1f} ms "
          f"| {max(ms):.1f} ms |")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--system", default="sys1")
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    c = Client(a.dir)
    sid = a.system
    if c.system(sid)["PowerState"] != "Off":
        raise SystemExit(f"{sid} must be Off to start with")
    res = {}

    def add(k, v):
        res.setdefault(k, []).append(v)

    for _ in range(20):
        t = time.monotonic()
        c.request("GET", "/redfish/v1/")
        add("GET service root (keep-alive)", time.monotonic() - t)
        t = time.monotonic()
        c.system(sid)
        add("GET system (keep-alive)", time.monotonic() - t)

    def lrt(s):
        return s.get("LastResetTime")

    def os_running(s):
        return s.get("BootProgress", {}).get("LastState") == "OSRunning"

    acpi = None
    for _ in range(a.rounds):
        add("Reset On: answer", c.reset(sid, "On"))
        add("Reset On -> PowerState On", c.wait(sid, lambda s: s["PowerState"] == "On")[0])
        if acpi is None:
            # The ACPI guest says OSRunning within a minute; the OS-less VM never.
            try:
                add("Reset On -> OSRunning", c.wait(sid, os_running, timeout=60)[0])
                acpi = True
            except SystemExit:
                acpi = False
        elif acpi:
            add("Reset On -> OSRunning", c.wait(sid, os_running)[0])
        for reset_type in ["ForceRestart"] + (["GracefulRestart"] if acpi else []):
            before = lrt(c.system(sid))
            add(f"Reset {reset_type}: answer", c.reset(sid, reset_type))
            took, off = c.wait(sid, lambda s: lrt(s) != before)
            assert not off, f"{reset_type} showed PowerState Off"
            add(f"Reset {reset_type} -> LastResetTime moved", took)
            if acpi:
                add(f"Reset {reset_type} -> OSRunning again", c.wait(sid, os_running)[0])
        if acpi:
            add("Reset GracefulShutdown: answer", c.reset(sid, "GracefulShutdown"))
            add("Reset GracefulShutdown -> Off",
                c.wait(sid, lambda s: s["PowerState"] == "Off")[0])
        else:
            add("Reset ForceOff: answer", c.reset(sid, "ForceOff"))
            add("Reset ForceOff -> Off", c.wait(sid, lambda s: s["PowerState"] == "Off")[0])
    print(f"guest: {'acpi' if acpi else 'none (OS-less SeaBIOS VM)'}\n")
    print("| what | n | mean | p50 | max |\n|---|---|---|---|---|")
    for k, v in res.items():
        row(k, v)


if __name__ == "__main__":
    main()
