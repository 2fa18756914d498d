#!/usr/bin/env bash
# Builds the librdkafka the fault suite's confluent-kafka producer loads, once, into
# .cache/librdkafka (or $1), with the version it holds in VERSION: a new VERSION here
# builds again. Debian bookworm's librdkafka 2.0.2 has an idempotent-producer bug
# fixed upstream in 2.3.0 (confluentinc/librdkafka#4438): after a request that may have
# been persisted (a timeout, a disconnection) it moves its next expected sequence past
# the batch, and if that batch then turns out not to be written (the retry of an earlier
# batch was refused, say NOT_ENOUGH_REPLICAS) the broker's OUT_OF_ORDER_SEQUENCE_NUMBER
# becomes a fatal "rewound sequence number" that stops the producer — against Kafka as
# against Gregor. The source comes from the npm package node-rdkafka, which bundles a
# pinned librdkafka; npm is reachable where the Python package index may not be. No
# TLS, SASL or zstd: the fault suite needs none, and the build needs no more than gcc.
set -euo pipefail
NODE_RDKAFKA=node-rdkafka@3.6.1
VERSION=2.12.0
cd "$(dirname "$0")/.."
dest=${1:-.cache/librdkafka}
if [ -e "$dest/librdkafka.so.1" ] && [ "$(cat "$dest/VERSION" 2>/dev/null)" = "$VERSION" ]; then
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "build-librdkafka: fetching librdkafka $VERSION's source ($NODE_RDKAFKA from npm)"
(cd "$tmp" && npm pack --silent "$NODE_RDKAFKA" >/dev/null)
tar xzf "$tmp"/node-rdkafka-*.tgz -C "$tmp" package/deps/librdkafka
src=$tmp/package/deps/librdkafka
want=$(printf '0x%02x%02x%02xff' $(echo "$VERSION" | tr . ' '))
if ! grep -q "define RD_KAFKA_VERSION *$want" "$src/src/rdkafka.h"; then
  echo "build-librdkafka: $NODE_RDKAFKA does not bundle librdkafka $VERSION" >&2
  exit 1
fi
echo "build-librdkafka: compiling librdkafka $VERSION (about a minute)"
if ! (cd "$src" && ./configure --disable-ssl --disable-gssapi --disable-zstd --disable-curl \
      --disable-lz4-ext --disable-regex-ext >"$tmp/configure.log" 2>&1 &&
      make -j"$(nproc)" -C src librdkafka.so.1 >"$tmp/make.log" 2>&1); then
  tail -40 "$tmp/configure.log" "$tmp/make.log" >&2 || true
  echo "build-librdkafka: the build failed" >&2
  exit 1
fi
mkdir -p "$(dirname "$dest")"
rm -rf "$dest.tmp"
mkdir "$dest.tmp"
cp "$src/src/librdkafka.so.1" "$dest.tmp/"
echo "$VERSION" >"$dest.tmp/VERSION"
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "build-librdkafka: $dest/librdkafka.so.1"
