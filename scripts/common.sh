# Shared by scripts/dev.sh and scripts/test.sh: make a fresh Debian/Ubuntu machine (as root)
# able to build and run phibox, installing only what is missing.

set -euo pipefail

die() { echo "phibox: $*" >&2; exit 1; }
say() { echo "==> $*"; }

require_root() {
  [ "$(id -u)" -eq 0 ] || die "run this as root: phibox confines its worker with namespaces, mounts and a uid switch"
}

# Debian packages the build and the tests need (command -> package).
ensure_packages() {
  local missing=() pair cmd pkg
  for pair in "$@"; do
    cmd=${pair%%:*}; pkg=${pair#*:}
    if [ "${cmd#/}" != "$cmd" ]; then compgen -G "$cmd" >/dev/null && continue; else command -v "$cmd" >/dev/null 2>&1 && continue; fi
    missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# The Rust toolchain: the machine's rustup/cargo if present, else rustup's installer.
ensure_rust() {
  if [ -x "$HOME/.cargo/bin/cargo" ]; then export PATH="$HOME/.cargo/bin:$PATH"; fi
  if command -v cargo >/dev/null 2>&1; then return; fi
  ensure_packages curl:curl ca-certificates:ca-certificates
  say "installing the Rust toolchain with rustup"
  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal --component rustfmt,clippy
  export PATH="$HOME/.cargo/bin:$PATH"
}

base_packages() {
  # llama.cpp (through llama-cpp-sys-2) needs cmake, a C++ compiler and libclang for bindgen.
  ensure_packages cc:gcc c++:g++ /usr/include/stdio.h:libc6-dev cmake:cmake clang:clang \
    "/usr/lib/llvm-*/lib/libclang.so":libclang-dev ip:iproute2 nsenter:util-linux
}
