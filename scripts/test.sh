#!/usr/bin/env bash
# The project's test command (README "Run the tests"): formatting, lints, every test
# (unit, integration, doc tests, simulations, live-Redis tests) of the whole workspace, the
# API docs (rustdoc warnings are errors), then the loom model tests.
# Works on a fresh machine with only a Rust toolchain: it adds rustfmt/clippy if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v rustup >/dev/null 2>&1; then
  for component in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^${component}"; then
      rustup component add "$component"
    fi
  done
fi

# Two cores: keep one build, no incremental artefacts to write in CI.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "==> cargo fmt --all --check"
cargo fmt --all --check

echo "==> cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

# brownout-redis's tests start their own throw-away redis-server; install it when missing.
# CI (.ci/run) sets BROWNOUT_REQUIRE_REDIS=1 so those tests fail rather than skip without it.
echo "==> redis-server for the brownout-redis tests"
if bash scripts/redis.sh; then
  export BROWNOUT_REQUIRE_REDIS=1
elif [ "${BROWNOUT_REQUIRE_REDIS:-0}" = 1 ]; then
  echo "redis-server is required (BROWNOUT_REQUIRE_REDIS=1) and could not be installed" >&2
  exit 1
else
  echo "warning: no redis-server; the brownout-redis tests against a live Redis will skip" >&2
fi

echo "==> cargo test --workspace"
cargo test --workspace --locked

# Broken intra-doc links and malformed docs fail here, with every feature on (the doc tests
# ran above with the default features).
echo "==> cargo doc --workspace --all-features (rustdoc warnings are errors)"
RUSTDOCFLAGS="${RUSTDOCFLAGS:-} -D warnings" cargo doc --workspace --no-deps --all-features --locked

echo "==> loom model tests (scripts/loom.sh)"
bash scripts/loom.sh --locked
