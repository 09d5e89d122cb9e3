#!/usr/bin/env bash
# Installs the Redfish bench peer: sushy-tools (the DMTF-style Redfish emulator
# from OpenStack) into hil-tests/.venv, plus openssl for the bench certificate.
# Idempotent: a second run only checks that everything is there.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
venv="$(cd "$here/.." && pwd)/.venv"
SUSHY_VERSION="${SUSHY_VERSION:-2.2.0}"

# Debian packages, only those missing (a fresh Debian 12 may lack any of them).
need=()
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl ca-certificates)
command -v python3 >/dev/null || need+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq "${need[@]}"
fi
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('sushy-tools') != '$SUSHY_VERSION')" 2>/dev/null \
   || ! "$venv/bin/python" -c 'import bcrypt' 2>/dev/null; then
    "$venv/bin/pip" install -q --disable-pip-version-check "sushy-tools==$SUSHY_VERSION" bcrypt
fi
"$venv/bin/sushy-emulator" --help >/dev/null
echo "sushy-tools $SUSHY_VERSION ready in $venv"
