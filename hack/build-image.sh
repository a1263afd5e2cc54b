#!/usr/bin/env bash
# Build the operator image from the Dockerfile without a Docker engine: buildah (daemonless,
# chroot isolation) as root.
#
#   bash hack/build-image.sh [TAG]            # default tag: localhost/inferfleet:dev
#
# The Dockerfile's base (python:3.11.13-slim-bookworm) comes from a container registry. Set
# PYTHON_IMAGE to it (or any base) where a registry can be reached. Without PYTHON_IMAGE the base
# is a stand-in built from Debian's own packages, which this machine does reach: Debian bookworm
# (debootstrap, minbase) with Debian's Python 3.11, the same distribution the real base is built
# on. Its root filesystem is cached as a tarball under the cache folder, keyed by its package list.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cache="${INFERFLEET_CACHE:-$repo/.cache}"
tag="${1:-localhost/inferfleet:dev}"
log() { printf '[build-image %(%H:%M:%S)T] %s\n' -1 "$*"; }
export BUILDAH_ISOLATION=chroot

for tool in buildah debootstrap; do
  command -v "$tool" >/dev/null || { log "missing $tool: run 'make setup' (installs it as root)"; exit 1; }
done
[ "$(id -u)" = 0 ] || { log "buildah's chroot isolation and debootstrap need root"; exit 1; }

standin_suite=bookworm
standin_packages=python3,python3-venv,python-is-python3
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
standin_key="$(printf '%s %s' "$standin_suite" "$standin_packages" | sha256sum | cut -c1-12)"
standin_image="localhost/inferfleet-python-standin:$standin_suite-$standin_key"

build_standin() {
  local tarball="$cache/images/python-standin-$standin_suite-$standin_key.tar"
  if [ ! -f "$tarball" ]; then
    local rootfs
    rootfs="$(mktemp -d)"
    log "debootstrap $standin_suite ($standin_packages) from $mirror: about a minute"
    debootstrap --variant=minbase --include="$standin_packages" "$standin_suite" "$rootfs" "$mirror" \
      > "$rootfs.log" 2>&1 || { tail -20 "$rootfs.log"; exit 1; }
    rm -rf "$rootfs/var/cache/apt/archives/"*.deb "$rootfs/var/lib/apt/lists/"*
    mkdir -p "$(dirname "$tarball")"
    tar -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    rm -rf "$rootfs" "$rootfs.log"
  fi
  log "importing the stand-in base $standin_image"
  local ctr mnt
  ctr="$(buildah from scratch)"
  mnt="$(buildah mount "$ctr")"
  tar -C "$mnt" -xf "$tarball"
  buildah umount "$ctr" >/dev/null
  buildah config --env PATH=/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin --cmd python3 "$ctr"
  buildah commit -q "$ctr" "$standin_image" >/dev/null
  buildah rm "$ctr" >/dev/null
}

base="${PYTHON_IMAGE:-}"
if [ -z "$base" ]; then
  base="$standin_image"
  [ -n "$(buildah images -q "$standin_image" 2>/dev/null)" ] || build_standin
fi

# pip in the build stage trusts what this machine trusts (a proxy's CA, say): RUN steps see the
# host's CA bundle; nothing of it lands in the image.
ca_bundle=/etc/ssl/certs/ca-certificates.crt
volumes=()
[ -f "$ca_bundle" ] && volumes+=(--volume "$ca_bundle:$ca_bundle:ro")
mkdir -p "$cache"
log "building $tag from the Dockerfile on $base"
started=$SECONDS
buildah bud --layers=false --build-arg "PYTHON_IMAGE=$base" "${volumes[@]}" -t "$tag" "$repo" \
  > "$cache/build-image.log" 2>&1 || { tail -30 "$cache/build-image.log"; exit 1; }
log "built $tag in $((SECONDS - started)) s (log: $cache/build-image.log)"
