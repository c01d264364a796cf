#!/usr/bin/env bash
# The service's container image, built with Podman (no Docker engine needed):
#
#   deploy/image.sh build     # podman + base image (cached) + churn build + containerize
#   deploy/image.sh run       # start it on :3000 (extra arguments go to `podman run`)
#   deploy/image.sh base      # only the Python base image
#
# The base image `localhost/churn-python:3.11` (bentofile.yaml's docker.base_image) is
# python:3.11-slim where a registry answers, else Debian bookworm bootstrapped from the apt
# mirror this machine uses plus Debian's Python 3.11 (CHURN_IMAGE_BASE=registry|debootstrap
# forces one). Either way it trusts the CA certificates this host added
# (/usr/local/share/ca-certificates: networks that intercept HTTPS) so the build can reach
# PyPI. Built once; `podman rmi localhost/churn-python:3.11` rebuilds it.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$root/deploy/containers.conf}"
export BENTOML_DO_NOT_TRACK=True
# The project's store (as `churn` uses), also for `bentoml containerize` below.
export BENTOML_HOME="${BENTOML_HOME:-$root/bentos}"
# This checkout's code, whichever checkout the .venv's editable install points at.
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
BASE_IMAGE="localhost/churn-python:3.11"
IMAGE="${CHURN_IMAGE:-localhost/churn_service:latest}"
PODMAN_PACKAGES="podman runc iptables netavark aardvark-dns slirp4netns uidmap fuse-overlayfs"

log() { printf '[image] %s\n' "$*" >&2; }

ensure_podman() {
  local missing=""
  for tool in podman runc; do command -v "$tool" >/dev/null || missing=yes; done
  if [ -n "$missing" ]; then
    log "installing $PODMAN_PACKAGES (Debian packages)"
    local sudo; sudo=$([ "$(id -u)" = 0 ] || echo sudo)
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $PODMAN_PACKAGES >/dev/null
  fi
}

# The first apt mirror this machine is configured with (deb822 or one-line format).
debian_mirror() {
  local uri
  uri=$(grep -hs '^URIs:' /etc/apt/sources.list.d/debian.sources | head -1 | awk '{print $2}')
  [ -n "$uri" ] || uri=$(grep -hs '^deb ' /etc/apt/sources.list | grep -v security \
    | head -1 | awk '{print $2}')
  echo "${uri:-http://deb.debian.org/debian}"
}

registry_reachable() {
  timeout 60 podman pull -q docker.io/library/python:3.11-slim >/dev/null 2>&1
}

bootstrap_debian() {
  local tag="localhost/churn-debian:bookworm" mirror rootfs
  podman image exists "$tag" && return
  command -v debootstrap >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  }
  mirror=$(debian_mirror)
  rootfs=$(mktemp -d /tmp/churn-rootfs.XXXXXX)
  log "debootstrap --variant=minbase bookworm from $mirror"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 \
    || { tail -20 "$rootfs.log"; exit 1; }
  cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb ${mirror%/debian}/debian-security bookworm-security main
EOF
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | podman import --change 'CMD ["/bin/bash"]' - "$tag" >/dev/null
  rm -rf "$rootfs" "$rootfs.log"
}

base() {
  ensure_podman
  if podman image exists "$BASE_IMAGE"; then
    log "base image $BASE_IMAGE present"
    return
  fi
  local from="${CHURN_IMAGE_BASE:-auto}" context
  if [ "$from" = auto ]; then
    if registry_reachable; then from=registry; else from=debootstrap; fi
  fi
  if [ "$from" = registry ]; then
    from_image=docker.io/library/python:3.11-slim
  else
    bootstrap_debian
    from_image=localhost/churn-debian:bookworm
  fi
  log "base image $BASE_IMAGE from $from_image"
  context=$(mktemp -d)
  mkdir "$context/ca"
  cp /usr/local/share/ca-certificates/*.crt "$context/ca/" 2>/dev/null || true
  podman build -q --build-arg "FROM=$from_image" -t "$BASE_IMAGE" \
    -f "$root/deploy/Containerfile.base" "$context" >/dev/null
  rm -rf "$context"
}

build() {
  base
  local started=$SECONDS bentoml="$root/.venv/bin/bentoml" tag
  [ -x "$bentoml" ] || make -C "$root" setup
  log "churn build --demo"
  tag=$("$root/.venv/bin/churn" build --demo | tee /dev/stderr \
    | sed -n 's/.*Successfully built Bento(tag="\([^"]*\)").*/\1/p' | tail -1)
  [ -n "$tag" ] || { log "churn build printed no Bento tag"; exit 1; }
  log "bentoml containerize $tag"
  # BentoML 1.4.40 reads the Dockerfile template from its temporary build context but
  # refuses a template outside the working directory: build in a folder of our own.
  work=$(mktemp -d /tmp/churn-containerize.XXXXXX)
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && TMPDIR="$work" "$bentoml" containerize --backend podman "$tag" \
    -t "$IMAGE" -t "localhost/$tag" >&2)
  log "built $IMAGE ($tag) in $((SECONDS - started)) s, $(podman image inspect \
    --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}')"
}

run() {
  ensure_podman
  exec podman run --rm --name churn-service --network host --stop-timeout 30 "$@" "$IMAGE"
}

case "${1:-build}" in
  base) base ;;
  build) build ;;
  run) shift; run "$@" ;;
  *) echo "usage: $0 [base|build|run [podman run options]]" >&2; exit 2 ;;
esac
