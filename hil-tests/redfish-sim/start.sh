#!/usr/bin/env bash
# Starts rfsim (one Redfish BMC whose systems are QEMU VMs) in the background on
# https://127.0.0.1:PORT and waits until it answers. Everything lives in DIR:
#   DIR/cert.pem DIR/key.pem  self-signed leaf certificate (subjectAltName=IP:127.0.0.1,
#                             CA:FALSE: use it as the client's CA file or pin it)
#   DIR/password              the password of user "admin" ($RFSIM_PASSWORD, else random)
#   DIR/port                  PORT
#   DIR/rfsim.pid             the simulator's PID (stop.sh)
#   DIR/qemu.pids             every QEMU it ever started (stop.sh)
#   DIR/rfsim.log             its log
#   DIR/sysN/                 per system: console.log, qmp.sock, qemu.pid, qemu.log
#
# Usage: start.sh DIR PORT [rfsim options...]
#   e.g. start.sh /tmp/bmc 18443 --systems 2 --guest none --knobs '{"session_limit": 2}'
# Options (see rfsim.py --help and README.md): --systems N, --guest none|acpi,
# --power-on, --knobs JSON, --system-knobs JSON, --accel, --memory, --verbose.
set -euo pipefail

usage="usage: start.sh DIR PORT [rfsim options...]"
dir="${1:?$usage}"
port="${2:?$usage}"
shift 2
here="$(cd "$(dirname "$0")" && pwd)"
python=/usr/bin/python3
[ -x "$python" ] || python=python3

for tool in qemu-system-x86_64 openssl curl "$python"; do
    command -v "$tool" >/dev/null || { echo "start.sh: $tool not found; run $here/setup.sh" >&2; exit 1; }
done
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"

if [ -f "$dir/rfsim.pid" ] && kill -0 "$(cat "$dir/rfsim.pid")" 2>/dev/null; then
    echo "start.sh: already running: pid $(cat "$dir/rfsim.pid")" >&2
    exit 0
fi

# A leaf certificate (CA:FALSE): rustls/webpki refuses a CA certificate as an
# end-entity one. ECDSA P-256, which is generated in milliseconds.
if [ ! -s "$dir/cert.pem" ] || [ ! -s "$dir/key.pem" ]; then
    cat > "$dir/openssl.cnf" <<CNF
[req]
distinguished_name = dn
x509_extensions = leaf
prompt = no
[dn]
CN = 127.0.0.1
O = rack-agent bench (rfsim)
[leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1
CNF
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
        -config "$dir/openssl.cnf" -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null
fi

(
    umask 077
    printf '%s' "${RFSIM_PASSWORD:-rfsim-$(openssl rand -hex 8)}" > "$dir/password"
)
echo "$port" > "$dir/port"

setsid "$python" "$here/rfsim.py" --port "$port" --dir "$dir" \
    --cert "$dir/cert.pem" --key "$dir/key.pem" --password-file "$dir/password" "$@" \
    >> "$dir/rfsim.log" 2>&1 < /dev/null &
echo $! > "$dir/rfsim.pid"

# Ready when the service root answers over TLS with our certificate.
for _ in $(seq 1 200); do
    if curl -sf --max-time 2 --cacert "$dir/cert.pem" "https://127.0.0.1:$port/redfish/v1/" >/dev/null; then
        echo "rfsim pid $(cat "$dir/rfsim.pid") on https://127.0.0.1:$port (cert $dir/cert.pem)"
        exit 0
    fi
    if ! kill -0 "$(cat "$dir/rfsim.pid")" 2>/dev/null; then
        echo "start.sh: rfsim exited; its log:" >&2; cat "$dir/rfsim.log" >&2; exit 1
    fi
    sleep 0.05
done
echo "start.sh: rfsim did not answer on port $port within 10 s; its log:" >&2
cat "$dir/rfsim.log" >&2
"$here/stop.sh" "$dir" || true
exit 1
