#!/usr/bin/env bash
# Build Karpenter's KWOK provider (sigs.k8s.io/karpenter/kwok) from the Go module proxy and cache it
# by version, with the CRDs it needs, for bench/nodescale's real-Karpenter arm.
#
#   $INFERFLEET_CACHE/bin/karpenter-v$KARPENTER_VERSION/karpenter-kwok
#   $INFERFLEET_CACHE/bin/karpenter-v$KARPENTER_VERSION/crds/*.yaml   (NodePool, NodeClaim, KWOKNodeClass, ...)
#
# 174 s on 2 shared cores (Go build cache warm from build-binaries.sh); instant when cached.
# Not part of `make setup`: only bench/nodescale --karpenter needs it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cache="${INFERFLEET_CACHE:-$repo/.cache}"
dir="$cache/bin/karpenter-v$KARPENTER_VERSION"
mod="$cache/build/karpenter-v$KARPENTER_VERSION"

log() { printf '[build-karpenter %(%H:%M:%S)T] %s\n' -1 "$*"; }

if [ -x "$dir/karpenter-kwok" ] && [ -f "$dir/crds/karpenter.sh_nodepools.yaml" ]; then
  log "karpenter v$KARPENTER_VERSION: cached in $dir"
  exit 0
fi

export GOFLAGS="${GOFLAGS:--buildvcs=false} -trimpath -mod=mod"
export CGO_ENABLED=0
mkdir -p "$mod" "$dir.tmp/crds"
cd "$mod"
cat > go.mod <<GOMOD
module inferfleet.local/karpenter-kwok

go 1.26.0

require sigs.k8s.io/karpenter v$KARPENTER_VERSION
GOMOD
printf '//go:build tools\n\npackage tools\n\nimport _ "sigs.k8s.io/karpenter/kwok"\n' > tools.go
log "karpenter v$KARPENTER_VERSION: resolving modules"
go mod tidy -e >/dev/null 2>&1 || true
start=$SECONDS
log "karpenter v$KARPENTER_VERSION: go build sigs.k8s.io/karpenter/kwok"
go build -ldflags "-s -w" -o "$dir.tmp/karpenter-kwok" sigs.k8s.io/karpenter/kwok
src="$(go list -m -f '{{.Dir}}' "sigs.k8s.io/karpenter")"
cp "$src"/pkg/apis/crds/*.yaml "$src"/kwok/apis/crds/*.yaml "$dir.tmp/crds/"
chmod -R u+w "$dir.tmp"
rm -rf "$dir" && mv "$dir.tmp" "$dir"
log "karpenter v$KARPENTER_VERSION: built in $((SECONDS - start)) s into $dir"
