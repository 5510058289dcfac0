#!/usr/bin/env bash
# Installs Debian's chromium for tests/status_page.rs, which renders /status headless and fails
# (rather than skips) without it. Does nothing when chromium is already on PATH.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "chromium is missing and installing it needs root: sudo $0" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium
chromium --version
