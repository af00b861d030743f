#!/bin/sh
# Builds visit-tally from the WIT alone: bindings generated now, compiled with Debian's clang
# for wasm32 against wasi-libc, linked into a component by wasm-component-ld (from rustup).
#
#   plugins/c/visit-tally/build.sh OUT_DIR      -> OUT_DIR/visit_tally.wasm
#
# Needs: apt clang lld wasi-libc; `cargo install wit-bindgen-cli --version 0.61.1 --locked
# --no-default-features --features c`; rustup (for wasm-component-ld). WIT_BINDGEN and
# WASM_COMPONENT_LD name those tools if they are not the ones on PATH and in rustup.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
wit="$here/../../wit"
out=${1:?usage: build.sh OUT_DIR}
mkdir -p "$out/gen"

if [ -z "${WASM_COMPONENT_LD:-}" ]; then
  host=$(rustc -vV | sed -n 's/^host: //p')
  WASM_COMPONENT_LD="$(rustc --print sysroot)/lib/rustlib/$host/bin/wasm-component-ld"
fi

"${WIT_BINDGEN:-wit-bindgen}" c "$wit" --world analytics --out-dir "$out/gen"

# -Os: the component is shipped to routers and compiled there; -nostartfiles and --no-entry:
# a plugin is a library of exports, with no main; -nodefaultlibs -lc: only wasi-libc's
# malloc and string functions are wanted (Debian ships no compiler-rt for wasm32 by default).
cflags="--target=wasm32-wasi -Os -std=c11 -I$out/gen"
clang $cflags -Wall -Wextra -Werror -c "$here/visit_tally.c" -o "$out/visit_tally.o"
clang $cflags -c "$out/gen/analytics.c" -o "$out/analytics.o"
clang --target=wasm32-wasi -nostartfiles -nodefaultlibs -fuse-ld="$WASM_COMPONENT_LD" \
  -Wl,--no-entry -Wl,--strip-all \
  "$out/visit_tally.o" "$out/analytics.o" "$out/gen/analytics_component_type.o" -lc \
  -o "$out/visit_tally.wasm"
