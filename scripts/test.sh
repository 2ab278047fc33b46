#!/usr/bin/env bash
# Every test of intake: the host (unit and integration tests, which build the
# guest plugins they need), the sample platform, and the plugin SDK's and
# connectors' own unit tests (run natively). Ends with one total line.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/ensure-toolchain.sh
host=$(rustc -vV | sed -n 's/^host: //p')
log=$(mktemp)
trap 'rm -f "$log"' EXIT
(cd plugins && cargo test --target "$host") 2>&1 | tee -a "$log"
cargo test --workspace 2>&1 | tee -a "$log"
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
