#!/usr/bin/env bash
# Install everything zeromesh needs on a Debian machine (run as root): system tools,
# a virtualenv on the system Python, and the package with its dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "zeromesh's local cluster needs root (network namespaces, nftables); run as root" >&2
  exit 1
fi

packages=(python3 python3-venv python3-dev iproute2 nftables util-linux curl procps openssl tcpdump nodejs
          prometheus chromium chromium-driver ${EXTRA_APT_PACKAGES:-})
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing system packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  /usr/bin/python3 -m venv .venv
fi
.venv/bin/pip install -q --disable-pip-version-check -e ".[dev]"
