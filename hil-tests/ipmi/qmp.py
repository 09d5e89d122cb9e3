#!/usr/bin/env python3
"""Sends one QMP command to a QEMU monitor socket and prints the answer as JSON.

Usage: qmp.py SOCKET COMMAND    e.g. qmp.py /tmp/b/bmc0/qmp.sock query-status
Used by chassis_control (system_reset, system_powerdown) and by the HIL tests
as an observer that does not go through the BMC.
"""
import json
import socket
import sys


def main() -> int:
    path, command = sys.argv[1], sys.argv[2]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    f = s.makefile("rwb")

    def read_reply():
        while True:
            line = f.readline()
            if not line:
                raise SystemExit("qmp: connection closed")
            msg = json.loads(line)
            if "return" in msg or "error" in msg:
                return msg

    f.readline()  # greeting
    f.write(b'{"execute": "qmp_capabilities"}\n')
    f.flush()
    read_reply()
    f.write(json.dumps({"execute": command}).encode() + b"\n")
    f.flush()
    reply = read_reply()
    print(json.dumps(reply))
    return 1 if "error" in reply else 0


if __name__ == "__main__":
    sys.exit(main())
