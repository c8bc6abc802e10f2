#!/usr/bin/env bash
# Install Debian's Chromium for the browser tests (tests/test_browser.py) when it is missing and this
# user may install packages (root, or sudo without a password, and apt-get). Otherwise say why and go
# on: the browser tests then skip with a reason. Never fails the test run.
set -uo pipefail

chromium="${DENSEMTL_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$chromium" ]; then
    exit 0
fi
if [ "$(id -u)" = 0 ]; then
    run_as_root=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    run_as_root=(sudo -n)
else
    echo "browser tests: no Chromium at $chromium and no root to install it; they will skip" \
         "(install it with 'sudo apt-get install chromium', or set DENSEMTL_CHROMIUM to a Chromium binary)"
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "browser tests: no Chromium at $chromium and no apt-get to install it; they will skip" \
         "(install Chromium with your package manager and set DENSEMTL_CHROMIUM to its path)"
    exit 0
fi
echo "browser tests: installing Debian's chromium (apt-get) ..."
if "${run_as_root[@]}" apt-get update -qq \
    && "${run_as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; then
    echo "browser tests: installed $("$chromium" --version 2>/dev/null || echo chromium)"
else
    echo "browser tests: apt-get could not install chromium; they will skip" \
         "(install it with 'apt-get install chromium', or set DENSEMTL_CHROMIUM)"
fi
exit 0
