#!/bin/sh
# ./build.sh        builds {{stem}}.wasm beside its manifest {{stem}}.toml
# ./build.sh test   runs the unit tests on this machine
# Needs: rustup with `rustup target add wasm32-unknown-unknown` (wasm-component-ld, the
# linker, ships with the toolchain).
set -eu
cd "$(dirname "$0")"
if [ "${1:-}" = test ]; then
  exec cargo test --target "$(rustc -vV | sed -n 's/^host: //p')"
fi
cargo build --release --target wasm32-unknown-unknown \
  --config 'target.wasm32-unknown-unknown.linker="wasm-component-ld"'
cp "${CARGO_TARGET_DIR:-target}/wasm32-unknown-unknown/release/{{stem}}.wasm" {{stem}}.wasm
echo "{{stem}}.wasm: $(wc -c < {{stem}}.wasm) bytes"
