#!/usr/bin/env bash
# Starts sushy-emulator (fake driver, 4 systems) on https://127.0.0.1:PORT with
# HTTP basic auth, everything it needs kept in DIR:
#   DIR/cert.pem DIR/key.pem  self-signed, subjectAltName=IP:127.0.0.1, CA:FALSE
#   DIR/htpasswd              bcrypt entry for admin / the password in DIR/password
#   DIR/emulator.conf         the sushy config (Python)
#   DIR/emulator.pid          the PID stop.sh kills
#   DIR/emulator.log          its output
# Usage: start.sh DIR PORT [PASSWORD]   (needs setup.sh first)
set -euo pipefail

dir="${1:?usage: start.sh DIR PORT [PASSWORD]}"
port="${2:?usage: start.sh DIR PORT [PASSWORD]}"
password="${3:-bench-secret-$RANDOM$RANDOM}"
here="$(cd "$(dirname "$0")" && pwd)"
venv="$(cd "$here/.." && pwd)/.venv"
[ -x "$venv/bin/sushy-emulator" ] || { echo "sushy-emulator missing: run $here/setup.sh" >&2; exit 1; }
mkdir -p "$dir/state"
dir="$(cd "$dir" && pwd)"

if [ -f "$dir/emulator.pid" ] && kill -0 "$(cat "$dir/emulator.pid")" 2>/dev/null; then
    echo "already running: pid $(cat "$dir/emulator.pid")" >&2
    exit 0
fi

# A leaf certificate (CA:FALSE), as a TLS client that checks basic constraints
# (rustls/webpki) expects when the certificate is its own trust anchor.
cat > "$dir/openssl.cnf" <<CNF
[req]
distinguished_name = dn
x509_extensions = leaf
prompt = no
[dn]
CN = 127.0.0.1
O = rack-agent bench
[leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1
CNF
if [ ! -s "$dir/cert.pem" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -config "$dir/openssl.cnf" \
        -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
fi

umask 077
printf '%s' "$password" > "$dir/password"
"$venv/bin/python" - "$dir/htpasswd" "$password" <<'PY'
import sys, bcrypt
path, pw = sys.argv[1], sys.argv[2]
with open(path, "w") as f:
    f.write("admin:" + bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=5)).decode() + "\n")
PY

cat > "$dir/emulator.conf" <<CONF
SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'
SUSHY_EMULATOR_LISTEN_PORT = $port
SUSHY_EMULATOR_SSL_CERT = '$dir/cert.pem'
SUSHY_EMULATOR_SSL_KEY = '$dir/key.pem'
SUSHY_EMULATOR_AUTH_FILE = '$dir/htpasswd'
SUSHY_EMULATOR_STATE_DIR = '$dir/state'
SUSHY_EMULATOR_FAKE_DRIVER = True
SUSHY_EMULATOR_FAKE_SYSTEMS = [
    {'uuid': '27946b59-9e44-4fa7-8e91-f3527a1ef001', 'name': 'rf-node-1', 'power_state': 'Off',
     'nics': [{'mac': '52:54:00:00:01:01', 'ip': '10.0.0.101'}]},
    {'uuid': '27946b59-9e44-4fa7-8e91-f3527a1ef002', 'name': 'rf-node-2', 'power_state': 'Off',
     'nics': [{'mac': '52:54:00:00:01:02', 'ip': '10.0.0.102'}]},
    {'uuid': '27946b59-9e44-4fa7-8e91-f3527a1ef003', 'name': 'rf-node-3', 'power_state': 'On',
     'nics': [{'mac': '52:54:00:00:01:03', 'ip': '10.0.0.103'}]},
    {'uuid': '27946b59-9e44-4fa7-8e91-f3527a1ef004', 'name': 'rf-node-4', 'power_state': 'On',
     'nics': [{'mac': '52:54:00:00:01:04', 'ip': '10.0.0.104'}]},
]
CONF

setsid "$venv/bin/sushy-emulator" --config "$dir/emulator.conf" \
    > "$dir/emulator.log" 2>&1 < /dev/null &
echo $! > "$dir/emulator.pid"

# Ready when the service root answers over TLS with our certificate.
for _ in $(seq 1 100); do
    if curl -sf --cacert "$dir/cert.pem" "https://127.0.0.1:$port/redfish/v1/" >/dev/null; then
        echo "sushy-emulator pid $(cat "$dir/emulator.pid") on https://127.0.0.1:$port"
        exit 0
    fi
    if ! kill -0 "$(cat "$dir/emulator.pid")" 2>/dev/null; then
        echo "sushy-emulator exited; log:" >&2; cat "$dir/emulator.log" >&2; exit 1
    fi
    sleep 0.1
done
echo "sushy-emulator did not answer on port $port within 10 s; log:" >&2
cat "$dir/emulator.log" >&2
exit 1
