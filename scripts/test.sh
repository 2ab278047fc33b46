#!/usr/bin/env bash
# Every test of intake: the host (unit and integration tests, which build the
# guest plugins they need), the sample platform, and the plugin SDK's and
# connectors' own unit tests (run natively).
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
(cd plugins && cargo test --target "$host")
cargo test --workspace
