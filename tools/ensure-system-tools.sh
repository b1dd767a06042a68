#!/usr/bin/env bash
# Installs the Debian packages that some tests use, when they are missing:
#   chromium        browser tests (Playwright drives the system browser; it cannot download one)
#   docker-compose  validates docker-compose.yml without a Docker engine
#   qemu-user       runs the native pieces (pgvector, onnxruntime, redis, llama.cpp) on an
#                   emulated CPU without AVX-512 (tests/agentplatform/test_portability.py)
#   redis-server, redis-tools  a Redis Cluster on loopback (tests/cluster/local_cluster.py starts
#                   3 primaries and 3 replicas on free ports; redis-cli --cluster create)
#   rabbitmq-server Celery on RabbitMQ (tests/e2e/test_rabbitmq_broker.py starts its own node
#                   on free loopback ports; a system RabbitMQ the package may start is unused)
# Without root or apt, the tests that need them skip with a message saying so.
set -uo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v qemu-x86_64 >/dev/null 2>&1 || missing+=(qemu-user)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
# Outside root's PATH (/usr/sbin), and the tests run the unwrapped script as this user.
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || missing+=(rabbitmq-server)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "Note: ${missing[*]} not installed and cannot be installed here; tests needing them skip."
  exit 0
fi
echo "Installing system packages for tests: ${missing[*]} ..."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
  echo "Note: installing ${missing[*]} failed; tests needing them skip."
fi
exit 0
