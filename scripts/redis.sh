#!/usr/bin/env bash
# Installs redis-server from the system package manager when it is not on PATH, so the
# brownout-redis tests and bench can start their own throw-away server (they never use one
# left running). Safe to run repeatedly; CI calls it before the tests.
set -euo pipefail

if command -v redis-server >/dev/null 2>&1; then
  echo "redis-server present: $(redis-server --version)"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "redis.sh: not root and no sudo; install redis-server by hand" >&2
    exit 1
  fi
fi

if command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq redis-server >/dev/null
elif command -v dnf >/dev/null 2>&1; then
  $SUDO dnf install -y redis
elif command -v apk >/dev/null 2>&1; then
  $SUDO apk add --no-cache redis
elif command -v brew >/dev/null 2>&1; then
  brew install redis
else
  echo "redis.sh: no known package manager (apt-get, dnf, apk, brew); install redis-server by hand" >&2
  exit 1
fi

# Debian's package starts a system service; the tests start their own on a free port and
# do not need it, but leaving it running does no harm.
command -v redis-server >/dev/null 2>&1 || {
  echo "redis.sh: redis-server still not on PATH after install" >&2
  exit 1
}
echo "redis-server installed: $(redis-server --version)"
