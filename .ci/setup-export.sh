#!/usr/bin/env bash
# System packages for tests/export (ShellCheck: actionlint lints each generated `run:` script with it)
# and tests/engine/test_reflink.py (btrfs-progs: a loop-mounted btrfs for real reflinks; filefrag
# comes with e2fsprogs). Idempotent: installs only what is missing.
set -euo pipefail
need=()
command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)
command -v mkfs.btrfs >/dev/null 2>&1 || need+=(btrfs-progs)
command -v filefrag >/dev/null 2>&1 || need+=(e2fsprogs)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
