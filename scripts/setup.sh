#!/usr/bin/env bash
# setup.sh - install kvserve's Debian build dependencies and build into build/.
# Usage: scripts/setup.sh            (as root, or with sudo available)
# Env:   KVSERVE_BUILDTYPE (default release), KVSERVE_WERROR=1 to make warnings errors.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(build-essential meson ninja-build pkg-config libuv1-dev node-llhttp libjansson-dev
      libopenblas-dev check unicode-data python3)
# tests/js drives the server with npm clients (the OpenAI SDK): Debian's node and npm unless
# the machine already has them.
if ! command -v npm >/dev/null; then PKGS+=(nodejs npm); fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi

# Browser tests (tests/js/test_ui.cjs): Debian's chromium, and puppeteer-core from the
# committed package-lock.json. KVSERVE_BROWSER=0 leaves them out (the test then skips).
if [ "${KVSERVE_BROWSER:-1}" = "1" ]; then
    if ! dpkg-query -W -f='${Status}' chromium 2>/dev/null | grep -q "install ok installed"; then
        echo "setup: installing chromium (browser tests)"
        $SUDO apt-get update
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends chromium
    fi
fi
# tests/js: the OpenAI SDK, Ajv and puppeteer-core, pinned by the committed package-lock.json.
if command -v npm >/dev/null 2>&1; then
    (cd tests/js && npm ci --no-audit --no-fund --loglevel=error)
else
    echo "setup: npm not found: the tests in tests/js will fail to load their packages"
fi

werror=false
if [ "${KVSERVE_WERROR:-0}" = "1" ] || [ "${CI:-}" = "true" ]; then werror=true; fi
if [ -d build ]; then
    meson setup --reconfigure build --buildtype="${KVSERVE_BUILDTYPE:-release}" -Dwerror=$werror
else
    meson setup build --buildtype="${KVSERVE_BUILDTYPE:-release}" -Dwerror=$werror
fi
ninja -C build
echo "setup: built build/kvserve"
