#!/bin/sh
# ./build.sh        builds {{stem}}.wasm beside its manifest {{stem}}.toml
# ./build.sh test   runs the unit tests (test_window.c) on this machine
#
# Needs (Debian/Ubuntu): apt install clang lld wasi-libc; the C bindings generator,
#   cargo install wit-bindgen-cli --version 0.61.1 --locked --no-default-features --features c
# and rustup, whose toolchain ships wasm-component-ld (the linker that makes the component).
# WIT_BINDGEN and WASM_COMPONENT_LD name those tools if they are not on PATH / in rustup.
set -eu
cd "$(dirname "$0")"
if [ "${1:-}" = test ]; then
  mkdir -p build
  ${CC:-cc} -std=c11 -Wall -Wextra -Werror window.c test_window.c -o build/test_window
  exec build/test_window
fi
if [ -z "${WASM_COMPONENT_LD:-}" ]; then
  host=$(rustc -vV | sed -n 's/^host: //p')
  WASM_COMPONENT_LD="$(rustc --print sysroot)/lib/rustlib/$host/bin/wasm-component-ld"
fi
mkdir -p build/gen
"${WIT_BINDGEN:-wit-bindgen}" c wit --world analytics --out-dir build/gen
# -Os: routers compile what you ship; no main (-nostartfiles, --no-entry): a plugin is a
# library of exports; only wasi-libc's malloc and string functions are linked.
cflags="--target=wasm32-wasi -Os -std=c11 -Ibuild/gen -I."
for f in window plugin; do
  clang $cflags -Wall -Wextra -Werror -c $f.c -o build/$f.o
done
clang $cflags -c build/gen/analytics.c -o build/analytics.o
clang --target=wasm32-wasi -nostartfiles -nodefaultlibs -fuse-ld="$WASM_COMPONENT_LD" \
  -Wl,--no-entry -Wl,--strip-all \
  build/window.o build/plugin.o build/analytics.o build/gen/analytics_component_type.o -lc \
  -o {{stem}}.wasm
echo "{{stem}}.wasm: $(wc -c < {{stem}}.wasm) bytes"
