#!/usr/bin/env bash
# Installs KafkaJS, the Node.js client the compatibility tests drive (cmd/dp's
# TestKafkaJS), once, into .cache/kafkajs/node_modules (or $1/node_modules), at the
# version in VERSION: a new VERSION here installs again. A fresh machine has Node and
# npm; the tests find the package through NODE_PATH.
set -euo pipefail
VERSION=2.2.4
cd "$(dirname "$0")/.."
dest=${1:-.cache/kafkajs}
if [ -e "$dest/node_modules/kafkajs/package.json" ] && [ "$(cat "$dest/VERSION" 2>/dev/null)" = "$VERSION" ]; then
  exit 0
fi
echo "install-kafkajs: installing kafkajs $VERSION from npm into $dest"
mkdir -p "$dest"
npm install --silent --no-audit --no-fund --no-save --prefix "$dest" "kafkajs@$VERSION" >/dev/null
echo "$VERSION" >"$dest/VERSION"
