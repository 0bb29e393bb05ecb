#!/usr/bin/env bash
# System packages for the ssh:// remote-cache tests (tests/support/sshserver.py starts its own sshd on
# 127.0.0.1 as the current user; nothing is started here). Idempotent: installs only what is missing.
set -euo pipefail
PATH="$PATH:/usr/sbin:/usr/local/sbin"  # sshd lives in sbin, which a non-root PATH may lack
exec bash "$(dirname "$0")/apt-need.sh" sshd=openssh-server ssh-keygen=openssh-client
