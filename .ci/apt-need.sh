#!/usr/bin/env bash
# Installs the Debian packages whose commands are missing, and nothing when all are there.
#   bash .ci/apt-need.sh COMMAND=PACKAGE ... [-- PACKAGE ...]
# Packages after `--` come along only when something is installed (e.g. fonts for a browser).
set -euo pipefail
need=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  command -v "${1%%=*}" >/dev/null 2>&1 || need+=("${1#*=}")
  shift
done
[ $# -gt 0 ] && shift
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" "$@" >/dev/null
