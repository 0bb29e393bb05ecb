#!/usr/bin/env bash
# Installs the policy linter (checkov) in a virtualenv of its own and prints where it is.
#
# A venv of its own because checkov pins libraries sluice also uses (networkx<2.7, packaging<24,
# boto3): installed beside sluice it would downgrade them. Checkov runs offline (--skip-download);
# only this install needs a package index. Idempotent.
#
# Usage:   eval "$(.ci/checkov-up.sh)"      # exports SLUICE_CHECKOV
# Env:     SLUICE_CHECKOV_VENV   where the venv lives (default /tmp/sluice-checkov)
set -euo pipefail

venv=${SLUICE_CHECKOV_VENV:-/tmp/sluice-checkov}
version=3.3.30
if ! "$venv/bin/checkov" --version 2>/dev/null | grep -qx "$version"; then
    echo "checkov-up: installing checkov $version into $venv (a few minutes)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check "checkov==$version" >&2
fi
echo "export SLUICE_CHECKOV=$venv/bin/checkov"
