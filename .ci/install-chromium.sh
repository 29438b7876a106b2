#!/bin/sh
# Headless Chromium for the report rendering test (tests/test_report.py). Idempotent: does
# nothing when /usr/bin/chromium exists; installs Debian's package when run as root; otherwise
# says how, and exits 0 so CI without root still runs (that test then skips its Chromium part).
set -eu
if [ -x /usr/bin/chromium ]; then
    echo "chromium: $(/usr/bin/chromium --version 2>/dev/null || echo present)"
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends chromium
    echo "chromium: $(/usr/bin/chromium --version 2>/dev/null || echo installed)"
else
    echo "chromium is not installed and this is not root; install it with:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends chromium" >&2
    echo "(tests/test_report.py skips its headless-Chromium check until then)" >&2
fi
exit 0
