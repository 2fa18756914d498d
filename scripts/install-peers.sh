#!/usr/bin/env bash
# Installs the peers the bench suite compares Gregor with — nats-server (JetStream) and
# redis-server (Streams) — from Debian packages, only when missing, so `make bench` works
# on a fresh machine and costs nothing on the second run. The harness starts them itself
# on loopback with its own configuration; the packages' system services are not used.
set -euo pipefail
missing=()
command -v nats-server >/dev/null 2>&1 || missing+=(nats-server)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-peers: nats-server and redis-server already installed"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
echo "install-peers: installing ${missing[*]} from Debian packages"
# noninteractive: the packages ask nothing a bench run could answer.
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends "${missing[@]}"
for b in nats-server redis-server; do
  command -v "$b" >/dev/null 2>&1 || { echo "install-peers: $b still missing after apt-get" >&2; exit 1; }
done
echo "install-peers: $(nats-server --version 2>&1 | head -1); $(redis-server --version | head -1)"
