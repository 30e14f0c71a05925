#!/usr/bin/env bash
# The Debian programs the tests run for real: chromium (the browser tests, driven by Playwright
# through executable_path, because Playwright's own browser download cannot be reached from here),
# nginx and haproxy (load balancers in front of several replicas), prometheus (scrapes them) and
# coturn (a TURN relay for WebRTC). Installs only what is missing; does nothing when all are there.
# The tests start each program themselves with their own configuration, by PID, on loopback.
set -euo pipefail

# command -> the Debian package that provides it
declare -A PACKAGES=(
    [chromium]=chromium
    [nginx]=nginx
    [haproxy]=haproxy
    [prometheus]=prometheus
    [turnserver]=coturn
)

missing=()
for command in "${!PACKAGES[@]}"; do
    # nginx and haproxy live in /usr/sbin, which a non-login shell may not have on its PATH.
    if ! command -v "$command" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$command" ]; then
        missing+=("${PACKAGES[$command]}")
    fi
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "missing: ${missing[*]}; run 'sudo apt-get install -y ${missing[*]}'" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# A fresh machine may have no package lists yet: update only when the first try fails. Installing
# must not start the packages' own daemons (there is no init system here; policy-rc.d says no).
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
apt-get install -y -q "${missing[@]}" || { apt-get update -q && apt-get install -y -q "${missing[@]}"; }
