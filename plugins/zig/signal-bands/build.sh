#!/bin/sh
# Builds signal-bands from the WIT alone: C bindings generated now (Zig calls them), the Zig
# code compiled freestanding for wasm32, the bindings by Debian's clang against wasi-libc (for
# malloc), all linked into a component by wasm-component-ld (from rustup).
#
#   plugins/zig/signal-bands/build.sh OUT_DIR        -> OUT_DIR/signal_bands.wasm
#   plugins/zig/signal-bands/build.sh --test         runs bands.zig's unit tests natively
#
# Needs: zig (PyPI's ziglang; `cargo xtask deps` installs it), apt clang lld wasi-libc,
# `cargo install wit-bindgen-cli --version 0.61.1 --locked --no-default-features --features c`,
# rustup (for wasm-component-ld). ZIG, WIT_BINDGEN and WASM_COMPONENT_LD name those tools if
# they are not the ones on PATH and in rustup.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
ZIG=${ZIG:-zig}
# The contract's Zig types are the template's (one copy for every Zig plugin in the tree).
shared="$here/../../templates/zig/wit.zig"
if [ "${1:-}" = --test ]; then
  $ZIG test "$shared"
  exec $ZIG test "$here/bands.zig"
fi
wit="$here/../../wit"
out=${1:?usage: build.sh OUT_DIR | --test}
mkdir -p "$out/gen" "$out/src"
cp "$here/plugin.zig" "$here/bands.zig" "$shared" "$out/src/"

if [ -z "${WASM_COMPONENT_LD:-}" ]; then
  host=$(rustc -vV | sed -n 's/^host: //p')
  WASM_COMPONENT_LD="$(rustc --print sysroot)/lib/rustlib/$host/bin/wasm-component-ld"
fi

"${WIT_BINDGEN:-wit-bindgen}" c "$wit" --world analytics --out-dir "$out/gen"

# mvp: the wasm features every engine has, and the ones clang's objects use. Nothing in the
# Zig code may import WASI, which the probegate host does not link.
$ZIG build-obj -target wasm32-freestanding -mcpu mvp -O ReleaseSmall "$out/src/plugin.zig" \
  -femit-bin="$out/plugin.o"
clang --target=wasm32-wasi -Os -I"$out/gen" -c "$out/gen/analytics.c" -o "$out/analytics.o"
clang --target=wasm32-wasi -nostartfiles -nodefaultlibs -fuse-ld="$WASM_COMPONENT_LD" \
  -Wl,--no-entry -Wl,--strip-all \
  "$out/plugin.o" "$out/analytics.o" "$out/gen/analytics_component_type.o" -lc \
  -o "$out/signal_bands.wasm"
