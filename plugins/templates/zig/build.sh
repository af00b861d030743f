#!/bin/sh
# ./build.sh        builds {{stem}}.wasm beside its manifest {{stem}}.toml
# ./build.sh test   runs the unit tests (of wit.zig and {{logic}}.zig) on this machine
#
# Needs: zig (`pip install ziglang` brings it: ZIG="python3 -m ziglang"); the C bindings
# generator, `cargo install wit-bindgen-cli --version 0.61.1 --locked --no-default-features
# --features c`; Debian's clang and wasi-libc (apt install clang lld wasi-libc) for the
# generated {{world}}.c and malloc; rustup, whose toolchain ships wasm-component-ld.
set -eu
cd "$(dirname "$0")"
ZIG=${ZIG:-zig}
if [ "${1:-}" = test ]; then
  $ZIG test wit.zig
  exec $ZIG test {{logic}}.zig
fi
if [ -z "${WASM_COMPONENT_LD:-}" ]; then
  host=$(rustc -vV | sed -n 's/^host: //p')
  WASM_COMPONENT_LD="$(rustc --print sysroot)/lib/rustlib/$host/bin/wasm-component-ld"
fi
mkdir -p build/gen
"${WIT_BINDGEN:-wit-bindgen}" c wit --world {{world}} --out-dir build/gen
# mvp: the wasm features every engine has, and the ones clang's objects use.
$ZIG build-obj -target wasm32-freestanding -mcpu mvp -O ReleaseSmall plugin.zig \
  -femit-bin=build/plugin.o
clang --target=wasm32-wasi -Os -Ibuild/gen -c build/gen/{{world}}.c -o build/{{world}}.o
clang --target=wasm32-wasi -nostartfiles -nodefaultlibs -fuse-ld="$WASM_COMPONENT_LD" \
  -Wl,--no-entry -Wl,--strip-all \
  build/plugin.o build/{{world}}.o build/gen/{{world}}_component_type.o -lc \
  -o {{stem}}.wasm
echo "{{stem}}.wasm: $(wc -c < {{stem}}.wasm) bytes"
