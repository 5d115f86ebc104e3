#!/usr/bin/env bash
# Builds the lockd image, starts docker/compose-3.yaml under a project name
# of its own, waits for `lockctl status` inside the network, writes and
# reads a node, and tears the project down (containers, network, volumes).
# Exits 77 (skipped) when no Docker daemon answers or compose is missing.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
project="lockd-packaging-test-$$"
export LOCKD_IMAGE="lockd:packaging-test-$$"
compose_file="$root/docker/compose-3.yaml"

skip() {
  echo "docker_test: skipped: $*"
  exit 77
}

command -v docker >/dev/null || skip "no docker command"
if ! reason=$(docker info 2>&1 >/dev/null); then
  skip "the Docker daemon is unreachable ($(echo "$reason" | tail -n 1))"
fi
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null; then
  compose=(docker-compose)
else
  skip "neither 'docker compose' nor docker-compose is installed"
fi
compose+=(-p "$project" -f "$compose_file")

# The cell publishes 127.0.0.1:7001-7003 (a running ./dev cell uses them).
for port in 7001 7002 7003; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "docker_test: 127.0.0.1:$port is in use (./dev cell?); stop it first"
    exit 1
  fi
done

teardown() {
  local status=$?
  if [ "$status" -ne 0 ]; then
    "${compose[@]}" logs --no-color --tail=50 || true
  fi
  "${compose[@]}" down --volumes --remove-orphans --timeout 30 || true
  docker image rm "$LOCKD_IMAGE" >/dev/null 2>&1 || true
  exit "$status"
}

docker build -f "$root/docker/Dockerfile" -t "$LOCKD_IMAGE" "$root"
trap teardown EXIT
"${compose[@]}" up -d --no-build

endpoints=lockd1:7001,lockd2:7001,lockd3:7001
lockctl=("${compose[@]}" exec -T lockd1 lockctl "--endpoints=$endpoints"
  --timeout=5s)
for ((try = 1; ; try++)); do
  if "${lockctl[@]}" status; then
    break
  fi
  if [ "$try" -ge 24 ]; then
    echo "docker_test: no leader after 2 minutes"
    exit 1
  fi
  sleep 5
done
"${lockctl[@]}" members
"${lockctl[@]}" put --parents /packaging/test ok
got=$("${lockctl[@]}" get /packaging/test)
if [ "$got" != ok ]; then
  echo "docker_test: read back '$got', expected 'ok'"
  exit 1
fi
echo "docker_test: ok"
