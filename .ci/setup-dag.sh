#!/usr/bin/env bash
# System packages for `sluice dag --format svg|png` (Graphviz) and the HTML view's browser test
# (headless Chromium). Idempotent: installs only what is missing.
set -euo pipefail
exec bash "$(dirname "$0")/apt-need.sh" dot=graphviz chromium=chromium -- fonts-dejavu-core
