#!/usr/bin/env bash
# Makes sure the toolchain pinned by rust-toolchain.toml has the wasm32-wasip2
# target. rustup installs a toolchain's listed targets only when it installs
# the toolchain itself, so a machine that already had 1.95.0 lacks it.
# Sourced by demo.sh and test.sh; a no-op when the target is there.
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  echo "installing the wasm32-wasip2 target (rustup target add wasm32-wasip2)" >&2
  rustup target add wasm32-wasip2 >&2
fi
