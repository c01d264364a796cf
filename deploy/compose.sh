#!/usr/bin/env bash
# The docker-compose.yml stack with Podman (no Docker engine, no registry needed):
#
#   deploy/compose.sh images    # the service image (deploy/image.sh) and the stack's images
#   deploy/compose.sh stack-images   # only the stack's (PostgreSQL, Redis, MLflow, ...)
#   deploy/compose.sh secrets   # random development secrets in deploy/compose/secrets/
#                               # (or CHURN_SECRETS_DIR)
#   deploy/compose.sh up        # both, then `podman-compose up -d`
#   deploy/compose.sh down      # stop and remove the containers (named volumes stay)
#   deploy/compose.sh <args>    # any other podman-compose command (ps, logs api, ...)
#
# PostgreSQL, Redis, Prometheus and Alertmanager are Debian's packages on the bootstrapped
# Debian base, MLflow is pip's on the service's Python base (deploy/compose/Containerfile.*);
# each is built once (`podman rmi localhost/churn-<name>:compose` rebuilds it). Where a
# registry answers, the official images can replace them (README, "Compose").
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$root/deploy/containers.conf}"
context="$root/deploy/compose"
secrets="${CHURN_SECRETS_DIR:-$context/secrets}"
export CHURN_SECRETS_DIR="$secrets"
compose=("$root/.venv/bin/podman-compose" -f "$root/docker-compose.yml")

log() { printf '[compose] %s\n' "$*" >&2; }

pinned() { sed -n "s/^$1==//p" "$root/constraints.txt"; }

images() {
  podman image exists "${CHURN_IMAGE:-localhost/churn_service:latest}" \
    || "$root/deploy/image.sh" build
  stack_images
}

stack_images() {
  "$root/deploy/image.sh" base
  local name
  for name in postgres redis prometheus alertmanager mlflow; do
    if podman image exists "localhost/churn-$name:compose"; then continue; fi
    log "building localhost/churn-$name:compose"
    podman build -q -t "localhost/churn-$name:compose" \
      --build-arg "MLFLOW_VERSION=$(pinned mlflow)" \
      --build-arg "PSYCOPG_VERSION=$(pinned psycopg)" \
      -f "$context/Containerfile.$name" "$context" >/dev/null
  done
}

random() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

# Development secrets, made once; in production put your own files there (same names).
# Readable by the containers' users (the folder is root's only).
make_secrets() {
  [ -f "$secrets/postgres-password" ] && return
  mkdir -p "$secrets" && chmod 700 "$secrets"
  local password; password=$(random)
  printf '%s\n' "$password" >"$secrets/postgres-password"
  printf 'postgresql://churn:%s@postgres:5432/churn\n' "$password" >"$secrets/database-url"
  printf 'postgresql+psycopg://churn:%s@postgres:5432/mlflow\n' "$password" \
    >"$secrets/mlflow-database-url"
  random >"$secrets/churn-api-keys" && echo >>"$secrets/churn-api-keys"
  random >"$secrets/churn-id-hash-secret"
  random >"$secrets/grafana-admin-password"
  for name in slack-webhook-url pagerduty-routing-key smtp-password; do
    echo replace-me >"$secrets/$name"
  done
  chmod 644 "$secrets"/*
  log "development secrets in $secrets"
}

case "${1:-up}" in
  images) images ;;
  stack-images) stack_images ;;
  secrets) make_secrets ;;
  up) shift || true; images; make_secrets; exec "${compose[@]}" up -d "$@" ;;
  *) make_secrets; exec "${compose[@]}" "$@" ;;
esac
