#!/usr/bin/env bash
# Installs Debian's etcd server and etcdctl for tests/etcd.rs, which starts a real etcd on
# loopback ports chosen at run time. CI sets HEARTH_REQUIRE_ETCD so those tests fail, rather than
# skip, without it. Does nothing when both binaries are already on PATH.
set -euo pipefail

if command -v etcd >/dev/null 2>&1 && command -v etcdctl >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "etcd is missing and installing it needs root: sudo $0" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# --no-install-recommends: the server's recommends pull nothing the tests use. The package's own
# service is never started: tests run their own etcd with a data dir in a temp dir.
apt-get install -y -qq --no-install-recommends etcd-server etcd-client
etcd --version | head -1
