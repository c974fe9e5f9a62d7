#!/usr/bin/env bash
# Usage: scripts/podman-setup.sh   (as root; CI runs it)
# Installs podman, buildah, debootstrap and runc from Debian's packages and configures podman for
# machines like ours: runc with cgroupfs (crun refuses hybrid cgroups) and no default ulimits.
set -euo pipefail
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
if ! command -v podman >/dev/null || ! command -v debootstrap >/dev/null; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq podman buildah debootstrap runc >/dev/null
fi
conf=/etc/containers/containers.conf
if ! grep -q 'cgroup_manager = "cgroupfs"' "$conf" 2>/dev/null; then
  $SUDO mkdir -p /etc/containers
  printf '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\n' | $SUDO tee "$conf" >/dev/null
fi
podman --version
