#!/usr/bin/env bash
# Starts a private Docker engine for the Docker tests and builds the local Python base image once.
#
# Idempotent: a daemon already answering on the socket is reused, and an existing base image is
# kept. No image registry is reachable from CI machines, so the base image is made with
# debootstrap from Debian packages (which are reachable) instead of pulling python:3.11-slim.
#
# Usage:   eval "$(.ci/docker-up.sh)"      # exports DOCKER_HOST and SLUICE_BASE_IMAGE
# Env:     SLUICE_DOCKER_ROOT   where the socket, data and logs live (default /tmp/sluice-docker)
#          SLUICE_BASE_IMAGE    name of the base image to build (default sluice-base/python:3.11-bookworm)
# Output:  `export VAR=value` lines on stdout; progress and errors on stderr. Exit 1 if no daemon.
set -euo pipefail

root=${SLUICE_DOCKER_ROOT:-/tmp/sluice-docker}
base_image=${SLUICE_BASE_IMAGE:-sluice-base/python:3.11-bookworm}
sock=$root/docker.sock
export DOCKER_HOST=unix://$sock

say() { echo "docker-up: $*" >&2; }

daemon_up() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

install_tools() {
    local missing=()
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    ((${#missing[@]} == 0)) && return 0
    if [[ $(id -u) != 0 ]]; then
        say "need ${missing[*]} but not root: install them, or run as root"
        return 1
    fi
    say "installing ${missing[*]}"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
}

start_daemon() {
    mkdir -p "$root/data" "$root/exec"
    say "starting dockerd (log: $root/dockerd.log)"
    # vfs and no iptables/bridge: the only combination that works inside these sandboxes;
    # containers and builds then use host networking.
    setsid dockerd --storage-driver=vfs --iptables=false --bridge=none \
        -H "unix://$sock" --data-root "$root/data" --exec-root "$root/exec" \
        --pidfile "$root/dockerd.pid" >"$root/dockerd.log" 2>&1 </dev/null &
    for _ in $(seq 1 60); do
        daemon_up && return 0
        sleep 0.5
    done
    say "dockerd did not answer within 30 s; last log lines:"
    tail -n 20 "$root/dockerd.log" >&2 || true
    return 1
}

build_base_image() {
    local rootfs=$root/rootfs
    say "building $base_image with debootstrap (about a minute)"
    rm -rf "$rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" http://deb.debian.org/debian >"$root/debootstrap.log" 2>&1 || {
        say "debootstrap failed; last log lines:"
        tail -n 20 "$root/debootstrap.log" >&2
        return 1
    }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' - "$base_image" >&2
    rm -rf "$rootfs"
}

mkdir -p "$root"
if ! daemon_up; then
    install_tools
    start_daemon
fi
if ! docker image inspect "$base_image" >/dev/null 2>&1; then
    install_tools
    build_base_image
fi
echo "export DOCKER_HOST=$DOCKER_HOST"
echo "export SLUICE_BASE_IMAGE=$base_image"
