#!/usr/bin/env bash
# Everything a fresh machine needs before the demo or the tests, idempotent and quick when done:
#   1. Debian packages (Prometheus, shellcheck, buildah, debootstrap), when missing and we can install them;
#   2. the Python environment in .venv (re-installed when pyproject.toml changes);
#   2b. moto's S3 server (tests only) in its own environment;
#   3. the local cluster's binaries, built from the Go module proxy and cached by version.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cd "$repo"
log() { printf '[setup %(%H:%M:%S)T] %s\n' -1 "$*"; }

# 1. Debian packages
apt_packages=()
command -v prometheus >/dev/null || apt_packages+=(prometheus)
command -v shellcheck >/dev/null || apt_packages+=(shellcheck)  # for `make lint` (scripts, workflows)
command -v python3 >/dev/null || apt_packages+=(python3 python3-venv)
# The image test builds the Dockerfile without a Docker engine (hack/build-image.sh).
command -v buildah >/dev/null || apt_packages+=(buildah)
command -v debootstrap >/dev/null || apt_packages+=(debootstrap)
# Engines at the pods' IPs: a private network namespace with a local route (tests/podengines.py).
command -v ip >/dev/null || apt_packages+=(iproute2)
command -v nsenter >/dev/null || apt_packages+=(util-linux)
command -v curl >/dev/null || apt_packages+=(curl)  # the gateway is proven with curl too
if [ ${#apt_packages[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing Debian packages: ${apt_packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
  else
    log "missing: ${apt_packages[*]}; install them (e.g. sudo apt-get install ${apt_packages[*]}) and rerun"
    exit 1
  fi
fi
command -v go >/dev/null || { log "Go >= 1.26 is needed to build the cluster binaries (https://go.dev/dl)"; exit 1; }

# 2. Python environment
python="${PYTHON:-python3}"
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  log "creating the Python environment in .venv"
  [ -x .venv/bin/python ] || "$python" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip==25.3
  .venv/bin/python -m pip install -q -e '.[dev,demo,bench]'
  rm -f .venv/.installed-* && touch "$stamp"
fi

# 2b. moto's S3 server for the fetch-model tests, in its own environment (hack/moto-requirements.txt says why)
moto_env="${INFERFLEET_CACHE:-$repo/.cache}/moto-$(sha256sum hack/moto-requirements.txt | cut -c1-16)"
if [ ! -f "$moto_env/.installed" ]; then
  log "creating moto's environment in $moto_env"
  rm -rf "$moto_env"
  "$python" -m venv "$moto_env"
  "$moto_env/bin/python" -m pip install -q --no-deps -r hack/moto-requirements.txt
  touch "$moto_env/.installed"  # last: an interrupted install is redone
fi

# 3. Cluster binaries (kube-apiserver, controller-manager, scheduler, kubectl, etcd, kwok, helm) and actionlint
bash "$here/build-binaries.sh"
log "ready"
