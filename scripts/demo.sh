#!/usr/bin/env bash
# intake demo: builds intake, the sample ad platform and the adsample connector,
# starts the platform on 127.0.0.1, creates two users and three data sources
# (two of them sharing one credential), fetches them all, and shows the result.
# Everything happens under ./demo/ (wiped first); nothing needs the internet.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
. scripts/ensure-toolchain.sh

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
run() { printf '\033[2m$ %s\033[0m\n' "$*"; "$@"; }

say "Building intake, the sample platform and the adsample plugin (the first build takes a few minutes)"
# Honour CARGO_TARGET_DIR (relative to the repository, as cargo reads it here).
target=${CARGO_TARGET_DIR:-target}
case $target in /*) ;; *) target="$root/$target" ;; esac
cargo build --quiet -p intake -p intake-sample-platform
(cd plugins && cargo build --quiet --release --target wasm32-wasip2 --target-dir "$target/wasm-guests")
intake() { "$target/debug/intake" "$@"; }
plugin="$target/wasm-guests/wasm32-wasip2/release/adsample.wasm"

rm -rf demo && mkdir demo && cd demo

say "Starting the sample ad platform (a fake API on 127.0.0.1)"
"$target/debug/intake-sample-platform" --listen 127.0.0.1:0 > platform.log 2>&1 &
platform_pid=$!
trap 'kill $platform_pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  url=$(sed -n 's/^listening on //p' platform.log | head -1)
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "${url:-}" ] || { echo "the sample platform did not start:"; cat platform.log; exit 1; }
echo "platform at $url"

say "Setting up intake: configuration, master key (mode 0600), database"
run intake init
cat >> intake.toml <<TOML

[[plugin]]
platform = "adsample"
path = "$plugin"
allow = ["$url"]
TOML
run intake plugin list

say "Two users"
run intake user add alice
run intake user add bob

say "alice connects acme-us with her agency token (read from stdin, never from argv)"
printf '$ printf %s | %s\n' "'access_token=…\\n'" "intake connect --user alice --platform adsample --name acme-us --title 'Acme agency token' --set base_url=$url --set account_id=acme-us --secrets -"
printf 'access_token=adsample-token-acme\n' | intake connect --user alice --platform adsample \
  --name acme-us --title 'Acme agency token' \
  --set "base_url=$url" --set account_id=acme-us --secrets -
cred=$(intake credentials list --user alice --json | sed -n 's/^    "id": \([0-9]*\),$/\1/p' | head -1)

say "alice connects acme-eu reusing that credential: no secret entered again"
run intake connect --user alice --platform adsample --name acme-eu --credential "$cred" \
  --set "base_url=$url" --set account_id=acme-eu

say "bob connects globex with his own token"
printf 'access_token=adsample-token-globex\n' | intake connect --user bob --platform adsample \
  --name globex --title 'Globex token' --set "base_url=$url" --set account_id=globex --secrets -

say "bob tries to use alice's credential: refused, exactly as if it did not exist"
run intake connect --user bob --platform adsample --name sneaky --credential "$cred" \
  --set "base_url=$url" --set account_id=acme-us || true

run intake sources list

say "Fetching every data source (concurrently; the plugin never sees a token: the host injects it)"
run intake run

say "Where the records went"
find output -type f -name '*.jsonl' | sort
for f in output/*/*.jsonl; do printf '%s: %s records, first: ' "$f" "$(wc -l < "$f")"; head -1 "$f"; done

say "alice's credentials (never the values)"
run intake credentials list --user alice

say "A second run is incremental: nothing new since the saved cursors"
run intake run

say "On schedule: intake serve fetches every data source when it is due (stopped after 5 s)"
run intake sources schedule acme-us --every 2s
run intake sources schedule acme-eu --every 2s
run intake sources schedule globex --cron '*/2 * * * * *'
printf '$ intake serve   # SIGTERM after 5 s\n'
intake serve &
serve_pid=$!
sleep 5
kill -TERM "$serve_pid"
wait "$serve_pid"
run intake runs --source acme-us

printf '\nDone. Everything is in %s/demo (database intake.redb, key intake.key, output/).\n' "$root"
