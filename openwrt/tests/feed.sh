#!/bin/bash
# The feed Makefile (openwrt/net/probegate) in a tree laid out as an OpenWrt SDK with the
# packages feed and this repository's openwrt/ as a feed: `make -n` for a runtime-only mips
# package and a full aarch64 one must print the commands a real build needs. The SDK's
# includes are stand-ins (tests/sdk/); where $OPENWRT_SHELL or ../shared/openwrt-shell/
# holds the real rust-package.mk (and rust-values.mk), those are used instead.
set -u
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
real="${OPENWRT_SHELL:-$repo/../shared/openwrt-shell}"
top="$(mktemp -d "${TMPDIR:-/tmp}/probegate-sdk.XXXXXX")"
trap 'rm -rf "$top"' EXIT
mkdir -p "$top/include" "$top/feeds/packages/lang/rust"
cp "$here/sdk/rules.mk" "$top/"
cp "$here/sdk/include/package.mk" "$top/include/"
if [ -f "$real/rust-package.mk" ] && [ -f "$real/rust-values.mk" ]; then
	cp "$real/rust-package.mk" "$real/rust-values.mk" "$top/feeds/packages/lang/rust/"
	which="real rust-package.mk"
else
	cp "$here/sdk/rust-package.mk" "$top/feeds/packages/lang/rust/"
	which="stand-in rust-package.mk"
fi
ln -s "$repo/openwrt" "$top/feeds/probegate"
pkg="$top/feeds/probegate/net/probegate"
failures=0
expect() { # expect <what> <output> <fixed string>
	if grep -qF -- "$3" <<<"$2"; then :; else echo "FAIL $1: no \"$3\""; failures=$((failures + 1)); fi
}
refuse() {
	if grep -qF -- "$3" <<<"$2"; then echo "FAIL $1: \"$3\""; failures=$((failures + 1)); fi
}

out="$(cd "$pkg" && make -n TOPDIR="$top" ARCH=mips install-probegate info-probegate 2>&1)" ||
	{ echo "FAIL make -n (mips): $out"; exit 1; }
build="$top/build_dir/target-mips/probegate-0.1.0"
expect mips "$out" "cargo install -v --profile stripped"
expect mips "$out" "--path \"$build/gateway\""
expect mips "$out" "--no-default-features"
expect mips "$out" "--features \"daemon\""
refuse mips "$out" "compiler"
expect mips "$out" "--cfg libc_unstable_musl_v1_2"
expect mips "$out" "LIBPCAP_LIBDIR=$top/staging_dir/target-mips/usr/lib"
expect mips "$out" "LIBPCAP_VER="
expect mips "$out" "$repo/target/dist/plugins/pulley32be/visitor_counter.cwasm"
expect mips "$out" "$repo/target/dist/plugins/pulley32be/probegate.toml"
expect mips "$out" "DEPENDS @(aarch64||arm"
expect mips "$out" "+libpcap"
expect mips "$out" "USERID probegate:probegate"
expect mips "$out" "conffiles /etc/probegate/probegate.toml /etc/config/probegate"
for f in usr/bin/ etc/init.d/probegate etc/config/probegate etc/hotplug.d/net/50-probegate \
	etc/capabilities/probegate.json lib/upgrade/keep.d/probegate etc/probegate/probegate.toml \
	usr/lib/probegate/plugins/; do
	expect mips "$out" "$build/ipkg-probegate/$f"
done
expect mips "$out" "$build/plugins/visitor_counter.cwasm"

out="$(cd "$pkg" && make -n TOPDIR="$top" ARCH=aarch64 BUILD_VARIANT=full install-probegate-full 2>&1)" ||
	{ echo "FAIL make -n (aarch64 full): $out"; exit 1; }
expect full "$out" "--features \"compiler\""
expect full "$out" "$repo/target/wasm/visitor_counter.wasm"
expect full "$out" "$repo/config/probegate.toml"
refuse full "$out" "libc_unstable_musl_v1_2"
refuse full "$out" ".cwasm"

out="$(cd "$pkg" && make -n TOPDIR="$top" ARCH=arm install-probegate 2>&1)"
expect arm "$out" "$repo/target/dist/plugins/pulley32/visitor_counter.cwasm"

echo "openwrt/tests/feed.sh: make -n with the $which: $failures failed"
[ "$failures" = 0 ]
