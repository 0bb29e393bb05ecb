#!/usr/bin/env bash
# System packages for tests/export (ShellCheck: actionlint lints each generated `run:` script with it)
# and tests/engine/test_reflink.py (btrfs-progs: a loop-mounted btrfs for real reflinks; filefrag
# comes with e2fsprogs). Idempotent: installs only what is missing.
set -euo pipefail
exec bash "$(dirname "$0")/apt-need.sh" shellcheck=shellcheck mkfs.btrfs=btrfs-progs filefrag=e2fsprogs
