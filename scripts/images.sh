#!/usr/bin/env bash
# Usage: scripts/images.sh [base|component|serving|all] [cpu|cuda]
#
# Builds the platform's images with podman, without a registry: the Debian base is made with
# debootstrap and imported; Python packages come from the package index (the host's CA bundle is
# mounted for pip at /run/host-ca.crt) and torch from the local wheel directory pip is configured with (the CPU variant)
# or from PyTorch's CUDA index (the cuda variant, for clusters with GPUs).
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
variant=${2:-cpu}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
base=localhost/debian-min:bookworm
component=localhost/fusionrec:${version}-${variant}
serving=localhost/fusionrec-serving:${version}-${variant}
mirror=$(awk '/^URIs:/ && $2 ~ /debian$/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
mirror=${mirror:-http://deb.debian.org/debian}
wheels=$(pip config get global.find-links 2>/dev/null || echo /opt/wheels)
ca=/etc/ssl/certs/ca-certificates.crt

build_base() {
  if podman image exists "$base"; then echo "base image $base exists"; return; fi
  rootfs=$(mktemp -d)
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
  tar -C "$rootfs" -c . | podman import - "$base" >/dev/null
  rm -rf "$rootfs"
  echo "built $base"
}

build_component() {
  build_base
  mkdir -p "$wheels"
  podman build --network host --build-arg VARIANT="$variant" \
    -v "$ca:/run/host-ca.crt:ro" -v "$wheels:/wheels:ro" -f components/Containerfile -t "$component" .
  echo "built $component"
}

build_serving() {
  podman image exists "$component" || build_component
  # docker format: OCI images drop the HEALTHCHECK
  podman build --network host --format docker --build-arg COMPONENT_IMAGE="$component" -f serving/Containerfile -t "$serving" .
  echo "built $serving"
}

case "$what" in
  base) build_base ;;
  component) build_component ;;
  serving) build_serving ;;
  all) build_component; build_serving ;;
  *) echo "usage: $0 [base|component|serving|all] [cpu|cuda]" >&2; exit 2 ;;
esac
