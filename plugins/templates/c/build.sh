#!/bin/sh
# ./build.sh        builds {{stem}}.wasm beside its manifest {{stem}}.toml
# ./build.sh test   runs the unit tests (test_{{logic}}.c) on this machine
#
# Needs (Debian/Ubuntu): apt install clang lld wasi-libc; the C bindings generator,
#   cargo install wit-bindgen-cli --version 0.61.1 --locked --no-default-features --features c
# and rustup, whose toolchain ships wasm-component-ld (the linker that makes the component).
# WIT_BINDGEN and WASM_COMPONENT_LD name those tools if they are not on PATH / in rustup.
set -eu
cd "$(dirname "$0")"
if [ "${1:-}" = test ]; then
  mkdir -p build
  ${CC:-cc} -std=c11 -Wall -Wextra -Werror {{logic}}.c test_{{logic}}.c -o build/test_{{logic}}
  exec build/test_{{logic}}
fi
if [ -z "${WASM_COMPONENT_LD:-}" ]; then
  host=$(rustc -vV | sed -n 's/^host: //p')
  WASM_COMPONENT_LD="$(rustc --print sysroot)/lib/rustlib/$host/bin/wasm-component-ld"
fi
mkdir -p build/gen
"${WIT_BINDGEN:-wit-bindgen}" c wit --world {{world}} --out-dir build/gen
# -Os: routers compile what you ship; no main (-nostartfiles, --no-entry): a plugin is a
# library of exports; only wasi-libc's malloc and string functions are linked.
cflags="--target=wasm32-wasi -Os -std=c11 -Ibuild/gen -I."
for f in {{logic}} plugin; do
  clang $cflags -Wall -Wextra -Werror -c $f.c -o build/$f.o
done
clang $cflags -c build/gen/{{world}}.c -o build/{{world}}.o
clang --target=wasm32-wasi -nostartfiles -nodefaultlibs -fuse-ld="$WASM_COMPONENT_LD" \
  -Wl,--no-entry -Wl,--strip-all \
  build/{{logic}}.o build/plugin.o build/{{world}}.o build/gen/{{world}}_component_type.o -lc \
  -o {{stem}}.wasm
echo "{{stem}}.wasm: $(wc -c < {{stem}}.wasm) bytes"
