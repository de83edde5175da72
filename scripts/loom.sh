#!/usr/bin/env bash
# loom model tests (RELIABILITY case 22, issue #8): every interleaving of the load-level
# atomics (brownout-core) and of admit / release / cancel (brownout-admission), up to
# LOOM_MAX_PREEMPTIONS preemptions per execution.
#
# The cfg is `brownout_loom`, not `loom` (`--cfg loom` would rebuild tokio against loom,
# which does not compile as a plain dependency). A separate target dir keeps these
# RUSTFLAGS from invalidating the normal build.
set -euo pipefail
cd "$(dirname "$0")/.."

export RUSTFLAGS="${RUSTFLAGS:-} --cfg brownout_loom"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-3}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

cargo test -p brownout-core -p brownout-admission --test loom --release \
  --target-dir target/loom "$@"
