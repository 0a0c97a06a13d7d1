#!/usr/bin/env bash
# Builds llama.cpp's own llama-bench and llama-batched-bench as the benchmark's reference, from
# the llama.cpp that the PyPI sdist llama-cpp-python==0.3.36 vendors (llama-cpp-sys-2 vendors
# the library but not these tools). Same CPU flags as the worker: GGML_NATIVE off, ggml's
# defaults (AVX, AVX2, FMA, F16C, BMI2). Prints the directory holding the binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
readonly version=0.3.36
readonly dir=.cache/llama-ref
if [ -x "$dir/build/bin/llama-bench" ] && [ -x "$dir/build/bin/llama-batched-bench" ]; then
  echo "$dir/build/bin"; exit 0
fi
mkdir -p "$dir"
if [ ! -d "$dir/src" ]; then
  python3 -m pip download -q --no-deps --no-binary :all: -d "$dir" "llama-cpp-python==$version" >&2
  tar -xzf "$dir/llama_cpp_python-$version.tar.gz" -C "$dir"
  mv "$dir/llama_cpp_python-$version/vendor/llama.cpp" "$dir/src"
  rm -rf "$dir/llama_cpp_python-$version" "$dir/llama_cpp_python-$version.tar.gz"
fi
cmake -S "$dir/src" -B "$dir/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=ON >&2
cmake --build "$dir/build" -j "$(nproc)" --target llama-bench llama-batched-bench >&2
echo "$dir/build/bin"
