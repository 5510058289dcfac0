#!/usr/bin/env bash
# Installs promtool (from Debian's prometheus package) for tests/metrics_lint.rs, which pipes a
# running hearth's /metrics through `promtool check metrics` and fails, rather than skips,
# without it. Does nothing when promtool is already on PATH.
set -euo pipefail

if command -v promtool >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "promtool is missing and installing it needs root: sudo $0" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Only promtool is used; the server the package also brings is never started by the tests, and
# the recommended node exporter is left out.
apt-get install -y -qq --no-install-recommends prometheus
promtool --version 2>&1 | head -1
