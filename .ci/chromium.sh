#!/usr/bin/env bash
# Debian's chromium for the browser tests: Playwright drives it through executable_path, because
# Playwright's own browser download cannot be reached from here. Does nothing when it is there.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "chromium is missing and this is not root: run 'sudo apt-get install -y chromium'" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# A fresh machine may have no package lists yet: update only when the first try fails.
apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }
