#!/usr/bin/env bash
# Build the local cluster's binaries from the Go module proxy and cache them by version.
#
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl  (k8s.io/kubernetes)
#   etcd                                                             (go.etcd.io/etcd/server/v3)
#   kwok, kwokctl                                                    (sigs.k8s.io/kwok)
#   helm                                                             (helm.sh/helm/v3)
#   actionlint (lints .github/workflows, `make lint`)                 (github.com/rhysd/actionlint)
#
# Binaries land in $INFERFLEET_CACHE/bin/<component>-<version>/ (default: <repo>/.cache).
# A component whose folder already holds its binaries is skipped, so reruns are instant.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cache="${INFERFLEET_CACHE:-$repo/.cache}"
bin_root="$cache/bin"
work="$cache/build"
mkdir -p "$bin_root" "$work"

export GOFLAGS="${GOFLAGS:--buildvcs=false} -trimpath"
export CGO_ENABLED=0

log() { printf '[build-binaries %(%H:%M:%S)T] %s\n' -1 "$*"; }

# Print a heartbeat while a long step runs, so nobody thinks it hung.
with_progress() {
  local label="$1"; shift
  local start=$SECONDS
  "$@" &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 30 &
    wait $! 2>/dev/null || true
    kill -0 "$pid" 2>/dev/null && log "$label: still building ($((SECONDS - start)) s elapsed; a cold build takes 10-40 min on 2 cores)"
  done
  wait "$pid"
  log "$label: done in $((SECONDS - start)) s"
}

have_all() {
  local dir="$1"; shift
  local b
  for b in "$@"; do [ -x "$dir/$b" ] || return 1; done
}

build_kubernetes() {
  local dir="$bin_root/kubernetes-v$K8S_VERSION"
  have_all "$dir" kube-apiserver kube-controller-manager kube-scheduler kubectl && return 0
  log "kubernetes v$K8S_VERSION: preparing wrapper module"
  local mod="$work/kubernetes-v$K8S_VERSION"
  mkdir -p "$mod"
  local staging_version="v0.${K8S_VERSION#1.}"
  (
    cd "$mod"
    cat > go.mod <<GOMOD
module inferfleet.local/kubernetes-binaries

go 1.26.0

require k8s.io/kubernetes v$K8S_VERSION
GOMOD
    # Every staging module k8s.io/kubernetes replaces with a local path is mapped to its published version.
    local upstream_mod
    upstream_mod="$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')"
    grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$upstream_mod" | awk '{print $1}' | while read -r m; do
      echo "replace $m => $m $staging_version" >> go.mod
    done
    printf 'package tools\n\nimport (\n\t_ "k8s.io/kubernetes/cmd/kube-apiserver"\n\t_ "k8s.io/kubernetes/cmd/kube-controller-manager"\n\t_ "k8s.io/kubernetes/cmd/kube-scheduler"\n\t_ "k8s.io/kubernetes/cmd/kubectl"\n)\n' > tools.go
    sed -i 's/^package tools/\/\/go:build tools\n\npackage tools/' tools.go
    log "kubernetes v$K8S_VERSION: resolving modules"
    go mod tidy -e >/dev/null 2>&1 || true
    GOFLAGS="$GOFLAGS -mod=mod" go mod download
  )
  # Stamp the version, as upstream's build does: kwokctl and the API server's
  # compatibility checks read it.
  local minor="${K8S_VERSION#*.}"; minor="${minor%%.*}"
  local ldflags="-s -w"
  local pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags="$ldflags -X $pkg.gitVersion=v$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  mkdir -p "$dir.tmp"
  local cmd
  for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    log "kubernetes v$K8S_VERSION: building $cmd"
    (cd "$mod" && with_progress "$cmd" go build -mod=mod -tags tools -ldflags "$ldflags" -o "$dir.tmp/$cmd" "k8s.io/kubernetes/cmd/$cmd")
  done
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
}

build_etcd() {
  local dir="$bin_root/etcd-v$ETCD_VERSION"
  have_all "$dir" etcd && return 0
  local mod="$work/etcd-v$ETCD_VERSION"
  mkdir -p "$mod"
  (
    cd "$mod"
    printf 'module inferfleet.local/etcd\n\ngo 1.26.0\n\nrequire go.etcd.io/etcd/server/v3 v%s\n' "$ETCD_VERSION" > go.mod
    printf 'package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\nfunc main() { etcdmain.Main(os.Args) }\n' > main.go
    log "etcd v$ETCD_VERSION: resolving modules"
    go mod tidy >/dev/null
    mkdir -p "$dir.tmp"
    with_progress "etcd" go build -ldflags "-s -w" -o "$dir.tmp/etcd" .
  )
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
}

go_install() {  # name version dir pkg...
  local name="$1" version="$2" dir="$3"; shift 3
  mkdir -p "$dir.tmp"
  local pkg
  for pkg in "$@"; do
    log "$name v$version: go install $pkg"
    GOBIN="$dir.tmp" with_progress "$(basename "$pkg")" go install -ldflags "-s -w" "$pkg@v$version"
  done
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
}

build_kwok() {
  local dir="$bin_root/kwok-v$KWOK_VERSION"
  have_all "$dir" kwok kwokctl && return 0
  go_install kwok "$KWOK_VERSION" "$dir" sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok/cmd/kwokctl
}

build_helm() {
  local dir="$bin_root/helm-v$HELM_VERSION"
  have_all "$dir" helm && return 0
  go_install helm "$HELM_VERSION" "$dir" helm.sh/helm/v3/cmd/helm
}

build_actionlint() {
  local dir="$bin_root/actionlint-v$ACTIONLINT_VERSION"
  have_all "$dir" actionlint && return 0
  go_install actionlint "$ACTIONLINT_VERSION" "$dir" github.com/rhysd/actionlint/cmd/actionlint
}

main() {
  local start=$SECONDS
  local components=("$@")
  [ ${#components[@]} -gt 0 ] || components=(kwok etcd kubernetes helm actionlint)
  local c
  for c in "${components[@]}"; do "build_$c"; done
  log "all binaries ready under $bin_root ($((SECONDS - start)) s)"
}

main "$@"
