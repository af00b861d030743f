#!/bin/bash
# The service's life on a router, off the router: the init script, the hotplug script, the
# UCI file, keep.d and the packages' maintainer scripts, run as opkg, apk, procd and
# sysupgrade would run them, in a sandbox root per scenario.
#
#   openwrt/tests/run.sh <scripts-dir>
#
# <scripts-dir> holds the maintainer scripts exactly as the packages carry them (postinst,
# prerm, control for the .ipk; post-install, post-upgrade, pre-deinstall, rusers for the
# .apk): `cargo test -p xtask maintainer_scripts` writes them from the packaging code and runs
# this script.
#
# OpenWrt's shell libraries are replaced by our stand-ins (standin/: rc.common, functions.sh,
# procd.sh, uci, and procd_sim.py for ubus and procd itself). Where a directory
# ../shared/openwrt-shell/ exists beside the repository (or $OPENWRT_SHELL names one), each
# of rc.common, functions.sh, procd.sh, service.sh, uci.sh and jshn.sh found there is used
# instead of ours (the real procd.sh needs the real jshn.sh and libubox's `jshn` on PATH or in
# that directory), under bash, as OpenWrt's ash-compatible scripts expect.
#
# Every script is installed into the sandbox with its absolute paths under /etc, /usr, /lib,
# /sbin, /var and /tmp moved into the sandbox; nothing outside it is touched.
set -u

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
scripts="$(cd "${1:?usage: run.sh <scripts-dir>}" && pwd)"
export PG_STANDIN="$here/standin"
real="${OPENWRT_SHELL:-$repo/../shared/openwrt-shell}"
[ -d "$real" ] || real=""
shell=/bin/sh
[ -n "$real" ] && shell=/bin/bash

failures=0
checks=0
scenario=""
roots=()
# Sandboxes go when the run ends; PG_KEEP=1 keeps them to look into.
trap '[ -n "${PG_KEEP:-}" ] || rm -rf "${roots[@]}"' EXIT

fail() { echo "FAIL [$scenario] $*"; failures=$((failures + 1)); }
pass() { checks=$((checks + 1)); }
check() { # check <description> <command...>
	local what="$1"; shift
	if "$@"; then pass; else fail "$what"; fi
}

# Copies a script into the sandbox with its absolute paths moved into it.
install_file() { # install_file <from> <to (path on the router)> <mode>
	local to="$ROOT$2"
	mkdir -p "$(dirname "$to")"
	sed -E \
		-e "1s|^#!/bin/sh|#!$shell|" \
		-e 's#\$\{?(IPKG_INSTROOT|root)\}?/#${\1}/#g' \
		-e "s#(^|[^A-Za-z0-9_.-])/(etc|usr|lib|sbin|var|tmp)/#\\1$ROOT/\\2/#g" \
		"$1" > "$to"
	chmod "$3" "$to"
}

lib() { # lib <name>: the real library if there is one, else our stand-in
	if [ -n "$real" ] && [ -f "$real/$1" ]; then echo "$real/$1"; else echo "$PG_STANDIN/$1"; fi
}

# A router with OpenWrt's base files and nothing of probegate.
new_root() {
	scenario="$1"
	ROOT="$(mktemp -d "${TMPDIR:-/tmp}/probegate-openwrt.XXXXXX")"
	roots+=("$ROOT")
	export PG_ROOT="$ROOT"
	export PROBEGATE_NET="$ROOT/sys/class/net"
	mkdir -p "$ROOT"/{etc/rc.d,etc/config,tmp,var/lock,var/run,usr/lib/opkg/info,lib/apk/packages,sys/class/net}
	echo 'root:x:0:0:root:/root:/bin/ash' > "$ROOT/etc/passwd"
	echo 'root:x:0:' > "$ROOT/etc/group"
	echo 'root:::0:99999:7:::' > "$ROOT/etc/shadow"
	echo 'CET-1CEST,M3.5.0,M10.5.0/3' > "$ROOT/etc/TZ"
	echo 'nameserver 127.0.0.1' > "$ROOT/etc/resolv.conf"
	install_file "$(lib rc.common)" /etc/rc.common 0755
	install_file "$(lib functions.sh)" /lib/functions.sh 0644
	install_file "$(lib procd.sh)" /lib/functions/procd.sh 0644
	if [ -n "$real" ]; then
		[ -f "$real/service.sh" ] && install_file "$real/service.sh" /lib/functions/service.sh 0644
	fi
	# OpenWrt's functions.sh reads UCI through uci.sh: the real one if given, else ours.
	install_file "$(lib uci.sh)" /lib/config/uci.sh 0644
	# OpenWrt's procd.sh builds its messages with jshn.sh, whose json_dump needs libubox's
	# jshn binary: without both, our stand-in jshn.sh.
	if [ -n "$real" ] && [ -f "$real/jshn.sh" ] && PATH="$real:$PATH" command -v jshn >/dev/null; then
		install_file "$real/jshn.sh" /usr/share/libubox/jshn.sh 0644
	else
		install_file "$PG_STANDIN/jshn.sh" /usr/share/libubox/jshn.sh 0644
	fi
	install_file "$PG_STANDIN/uci" /sbin/uci 0755
	printf '#!/bin/sh\nexec "$@"\n' > "$ROOT/sbin/ujail" && chmod 0755 "$ROOT/sbin/ujail"
	export PATH="$PG_STANDIN/bin:${real:+$real:}$PATH"
}

# What the package puts on the router (the daemon is a stand-in; see standin/probegate).
unpack_package() { # unpack_package <binary-variant>
	install_file "$repo/openwrt/files/probegate.init" /etc/init.d/probegate 0755
	install_file "$repo/openwrt/files/probegate.hotplug" /etc/hotplug.d/net/50-probegate 0644
	# Conffiles: an edited one stays, as opkg and apk keep it.
	[ -f "$ROOT/etc/config/probegate" ] ||
		install_file "$repo/openwrt/files/probegate.config" /etc/config/probegate 0644
	# Data, not a script: its paths stay as sysupgrade reads them.
	mkdir -p "$ROOT/lib/upgrade/keep.d" && cp "$repo/openwrt/files/probegate.keep" "$ROOT/lib/upgrade/keep.d/probegate"
	install_file "$repo/openwrt/files/probegate.capabilities" /etc/capabilities/probegate.json 0644
	[ -f "$ROOT/etc/probegate/probegate.toml" ] ||
		install_file "$repo/config/probegate.toml" /etc/probegate/probegate.toml 0600
	install_file "$PG_STANDIN/probegate" /usr/bin/probegate 0755
	# A different build: another binary, as an upgrade brings.
	echo "# build $1" >> "$ROOT/usr/bin/probegate"
	mkdir -p "$ROOT/usr/lib/probegate/plugins"
	echo "plugin $1" > "$ROOT/usr/lib/probegate/plugins/visitor_counter.cwasm"
	local list="/usr/bin/probegate /etc/init.d/probegate /etc/config/probegate /etc/probegate/probegate.toml /etc/hotplug.d/net/50-probegate /lib/upgrade/keep.d/probegate /etc/capabilities/probegate.json /usr/lib/probegate/plugins/visitor_counter.cwasm"
	# The file lists the helpers read, with each path as the sandbox sees it.
	for p in $list; do echo "$ROOT$p"; done > "$ROOT/usr/lib/opkg/info/probegate.list"
}

as_apk() { # the package's bookkeeping as apk keeps it instead of opkg's
	mv "$ROOT/usr/lib/opkg/info/probegate.list" "$ROOT/lib/apk/packages/probegate.list"
	cp "$scripts/rusers" "$ROOT/lib/apk/packages/probegate.rusers"
}

maintainer() { # maintainer <script> [args]: run as the package manager runs it
	local s="$1"; shift
	install_file "$scripts/$s" "/usr/lib/opkg/info/probegate.$s" 0755
	cp "$scripts/control" "$ROOT/usr/lib/opkg/info/probegate.control"
	(cd "$ROOT" && "$ROOT/usr/lib/opkg/info/probegate.$s" "$@") >> "$ROOT/tmp/scripts.out" 2>&1
}

apk_script() { # apk_script <name>: apk runs its scripts from a temporary file
	install_file "$scripts/$1" "/tmp/apk.$1" 0755
	(cd "$ROOT" && "$ROOT/tmp/apk.$1") >> "$ROOT/tmp/scripts.out" 2>&1
}

init() { "$ROOT/etc/init.d/probegate" "$@" >> "$ROOT/tmp/scripts.out" 2>&1; }

uci_set() { # uci_set <option> <value>: edits /etc/config/probegate as `uci set` would
	sed -i "s|^\(\s*option $1 \).*|\1'$2'|" "$ROOT/etc/config/probegate"
}

interface_up() { # a network interface appears, as the kernel and hotplug announce it
	mkdir -p "$PROBEGATE_NET/$1"
	echo "$2" > "$PROBEGATE_NET/$1/ifindex"
	(cd "$ROOT" && ACTION=add INTERFACE="$1" $shell "$ROOT/etc/hotplug.d/net/50-probegate") >> "$ROOT/tmp/scripts.out" 2>&1
}

interface_down() {
	rm -rf "${PROBEGATE_NET:?}/$1"
	(cd "$ROOT" && ACTION=remove INTERFACE="$1" $shell "$ROOT/etc/hotplug.d/net/50-probegate") >> "$ROOT/tmp/scripts.out" 2>&1
}

fire() { python3 "$PG_STANDIN/procd_sim.py" fire "$@"; }
clock() { echo "$1" > "$ROOT/tmp/clock"; }
state() { python3 "$PG_STANDIN/procd_sim.py" state; }
# The probegate instance's field (jq path below .config), or its state.
instance() { state | jq -r ".probegate.instances.instance1.$1 // empty"; }
logged() { grep -q -- "$1" "$ROOT/tmp/procd.log" 2>/dev/null; }
log_count() { grep -c -- "$1" "$ROOT/tmp/procd.log" 2>/dev/null || true; }
running() { [ "$(instance state)" = running ]; }
not_running() { ! running; }

# The store's settings, as the guide tells IT to set them.
configure() {
	uci_set enabled 1
	uci_set interface phy0-mon0
	uci_set broker mqtt.store.example
	uci_set port 8883
	uci_set site store-0042
	uci_set gateway gw-1
	uci_set log_level debug
}

show() { # on failure, what happened
	[ "$failures" = 0 ] && return
	echo "--- $scenario: procd log"; cat "$ROOT/tmp/procd.log" 2>/dev/null
	echo "--- $scenario: script output"; cat "$ROOT/tmp/scripts.out" 2>/dev/null
}

# --- opkg: install, configure, reload, upgrade, remove -----------------------------------

new_root "ipk install"
unpack_package 1
PKG_UPGRADE=0 maintainer postinst configure
check "the probegate user is created" grep -q "^probegate:x:[0-9]*:[0-9]*:" "$ROOT/etc/passwd"
check "the probegate group is created" grep -q "^probegate:x:" "$ROOT/etc/group"
uid="$(grep '^probegate:' "$ROOT/etc/passwd" | cut -d: -f3)"
check "the user is unprivileged" test "$uid" -ge 1000
check "the user cannot log in" grep -q '^probegate:.*:/bin/false$' "$ROOT/etc/passwd"
check "enabled at boot (S95)" test -L "$ROOT/etc/rc.d/S95probegate"
check "stopped early at shutdown (K10)" test -L "$ROOT/etc/rc.d/K10probegate"
check "installed disabled in UCI: no instance, so no crash loop on the placeholder config" \
	test -z "$(instance state)"
check "its triggers are registered even when disabled" \
	test "$(state | jq -r '.probegate.triggers | map(.[1][1][2]) | sort | join(",")')" = "probegate,system,wireless"

scenario="ipk configure"
# A spool left by a run as root (an older version): the daemon must be able to use it now.
mkdir -p "$ROOT/etc/probegate/spool"
configure
interface_up phy0-mon0 7
fire config.change package=probegate
check "uci commit starts the daemon" running
check "the command carries the UCI settings over the TOML" test "$(instance 'config.command | join(" ")')" = \
	"$ROOT/usr/bin/probegate run --config $ROOT/etc/probegate/probegate.toml --set gateway.site=store-0042 --set gateway.id=gw-1 --set capture.interface=phy0-mon0 --set mqtt.host=mqtt.store.example --set mqtt.port=8883 --set log=debug"
check "check-config ran with the same settings first" \
	grep -q "^check-config $ROOT/etc/probegate/probegate.toml --set gateway.site=store-0042 .* --set log=debug$" "$ROOT/tmp/probegate.calls"
check "runs as user probegate" test "$(instance config.user)" = probegate
check "and group probegate" test "$(instance config.group)" = probegate
check "with the capability file" test "$(instance config.capabilities)" = "$ROOT/etc/capabilities/probegate.json"
check "which grants CAP_NET_RAW and nothing else" test "$(jq -c '[.[]] | unique' "$ROOT/etc/capabilities/probegate.json")" = '[["CAP_NET_RAW"]]'
check "no_new_privs" test "$(instance config.no_new_privs)" = true
check "in a jail named probegate" test "$(instance config.jail.name)" = probegate
check "the jail mounts the state directory read-write" test "$(instance "config.jail.mount[\"$ROOT/etc/probegate\"]")" = 1
check "and the plugins read-only" test "$(instance "config.jail.mount[\"$ROOT/usr/lib/probegate\"]")" = 0
check "respawn 3600 5 5" test "$(instance 'config.respawn | join(" ")')" = "3600 5 5"
check "term_timeout 40" test "$(instance config.term_timeout)" = 40
check "stderr to syslog" test "$(instance config.stderr)" = true
check "TZ from /etc/TZ" test "$(instance config.env.TZ)" = 'CET-1CEST,M3.5.0,M10.5.0/3'
check "bound to the monitor interface" test "$(instance 'config.netdev | join(" ")')" = phy0-mon0
check "the binary is among the watched files (an upgrade restarts)" \
	jq -e --arg b "$ROOT/usr/bin/probegate" '.probegate.instances.instance1.config.file | index($b)' <(state) >/dev/null
check "the state directory is the probegate group's, sticky" test "$(stat -c %a "$ROOT/etc/probegate")" = 1770
check "the config is group-readable only" test "$(stat -c %a "$ROOT/etc/probegate/probegate.toml")" = 640
check "both handed to group probegate" grep -q "chown root:probegate $ROOT/etc/probegate $ROOT/etc/probegate/probegate.toml" "$ROOT/tmp/chown.log"
check "an existing spool becomes the daemon's" grep -q "chown -R probegate:probegate $ROOT/etc/probegate/spool" "$ROOT/tmp/chown.log"
check "root's files are not" test "$(grep -c "probegate:probegate $ROOT/etc/probegate/probegate.toml" "$ROOT/tmp/chown.log")" = 0

scenario="ipk reload"
echo "# BROKEN" >> "$ROOT/etc/probegate/probegate.toml"
starts="$(log_count 'start probegate\|restart probegate\|stop probegate')"
fire config.change package=probegate
check "a broken config leaves the running daemon alone" test "$(log_count 'start probegate\|restart probegate\|stop probegate')" = "$starts"
check "still running" running
sed -i '/# BROKEN/d' "$ROOT/etc/probegate/probegate.toml"
uci_set log_level info
fire config.change package=probegate
check "a UCI change restarts with the new setting" \
	jq -e '.probegate.instances.instance1.config.command | index("log=info")' <(state) >/dev/null
check "running after the reload" running
uci_set site 'Store 42'
fire config.change package=probegate
check "an invalid UCI value is refused by check-config, the daemon keeps its settings" \
	jq -e '.probegate.instances.instance1.config.command | index("log=info")' <(state) >/dev/null
uci_set site store-0042
echo 'UTC0' > "$ROOT/etc/TZ"
fire config.change package=system
check "a time-zone change (system) restarts with the new TZ" test "$(instance config.env.TZ)" = UTC0
interface_down phy0-mon0
fire config.change package=wireless
check "a Wi-Fi change that removes the interface stops the daemon, no respawn loop" \
	test "$(instance state)" = ""
check "and no crash loop was ever entered" test "$(log_count crashloop)" = 0
interface_up phy0-mon0 9
check "the rebuilt interface (new ifindex) starts it again" running

scenario="ipk upgrade"
restarts="$(log_count 'restart probegate')"
PKG_UPGRADE=1 maintainer prerm upgrade 0.1.1
check "prerm on upgrade stops the daemon" not_running
check "but leaves it enabled" test -L "$ROOT/etc/rc.d/S95probegate"
unpack_package 2
PKG_UPGRADE=1 maintainer postinst configure 0.1.0
check "postinst starts the new binary" running
check "the UCI file the user edited is kept" grep -q "option site 'store-0042'" "$ROOT/etc/config/probegate"
check "one user, not two" test "$(grep -c '^probegate:' "$ROOT/etc/passwd")" = 1

scenario="ipk remove"
PKG_UPGRADE=0 maintainer prerm remove
check "prerm on removal stops the daemon" test "$(state | jq -r '.probegate // empty')" = ""
check "and disables it" test ! -e "$ROOT/etc/rc.d/S95probegate" -a ! -e "$ROOT/etc/rc.d/K10probegate"
show

# --- apk (OpenWrt 25.x): install, upgrade --------------------------------------------------

failures_before=$failures
new_root "apk install"
unpack_package 1
as_apk
configure
interface_up phy0-mon0 3
apk_script post-install || fail "post-install failed"
check "apk's post-install creates the user from probegate.rusers" grep -q "^probegate:" "$ROOT/etc/passwd"
check "and starts the configured daemon" running
check "enabled" test -L "$ROOT/etc/rc.d/S95probegate"

scenario="apk upgrade, same build"
apk_script post-upgrade
check "an unchanged daemon is left running (procd sees no change)" test "$(log_count 'restart probegate')" = 0

scenario="apk upgrade"
unpack_package 2
as_apk
apk_script post-upgrade
check "post-upgrade restarts the daemon on the new binary" test "$(log_count 'restart probegate')" = 1
check "running" running
check "still enabled" test -L "$ROOT/etc/rc.d/S95probegate"

scenario="apk remove"
apk_script pre-deinstall
check "pre-deinstall stops and disables" test -z "$(state | jq -r '.probegate // empty')" -a ! -e "$ROOT/etc/rc.d/S95probegate"
show

# --- boot: the monitor interface appears 60 s late -----------------------------------------

new_root "late interface"
unpack_package 1
PKG_UPGRADE=0 maintainer postinst configure
configure
clock 0
init boot
check "at boot without the interface, no instance is started (nothing to respawn)" test -z "$(instance state)"
check "it says it waits" grep -q "waiting for interface phy0-mon0" "$ROOT/tmp/syslog"
clock 60
interface_up wlan0 4
check "another interface does not start it" test -z "$(instance state)"
interface_up phy0-mon0 11
check "the interface appearing at t=60 s starts the daemon" running
check "without a crash loop" test "$(log_count crashloop)" = 0

scenario="late interface, without waiting"
# The control: the same boot with procd left to respawn an instance that cannot open its
# interface ends in procd's crash loop, so the checks above can fail.
interface_down phy0-mon0
python3 "$PG_STANDIN/procd_sim.py" ubus call service set "{\"name\":\"control\",\"instances\":{\"instance1\":{\"command\":[\"/usr/bin/probegate\",\"run\",\"--config\",\"/etc/probegate/probegate.toml\",\"--set\",\"capture.interface=phy0-mon0\"],\"respawn\":[\"3600\",\"5\",\"5\"]}}}"
check "procd gives up on a daemon started without its interface" logged "crashloop control/instance1"
show

# --- keep.d: what sysupgrade keeps -------------------------------------------------------

new_root "sysupgrade keep"
unpack_package 1
toml="$repo/config/probegate.toml"
# Every file the daemon or the operator keeps on flash, at the default paths the shipped
# config names (commented or not): relative ones are resolved against its directory.
setting() { sed -nE "s/^#? ?$1 = \"([^\"]+)\".*/\\1/p" "$toml" | head -n 1; }
abs() { case "$1" in /*) echo "$1" ;; *) echo "/etc/probegate/$1" ;; esac; }
persistent="/etc/config/probegate /etc/probegate/probegate.toml"
for key in consent_key_file consent_registry ca_file client_cert_file client_key_file; do
	v="$(setting "$key")"
	check "the shipped config names a default $key" test -n "$v"
	persistent="$persistent $(abs "$v")"
done
for key in outbox_spool_dir state_dir plugin_dir; do
	v="$(setting "$key")"
	check "the shipped config names a default $key" test -n "$v"
	persistent="$persistent $(abs "$v")/kept-file"
done
for p in $persistent; do mkdir -p "$(dirname "$ROOT$p")"; echo kept > "$ROOT$p"; done
# What sysupgrade's add_conffiles collects: every file or link under a keep.d entry.
kept="$(cd "$ROOT" && find $(sed -ne '/^[[:space:]]*$/d; /^#/d; s|^/||; p' lib/upgrade/keep.d/*) \( -type f -o -type l \) 2>/dev/null | sed 's|^|/|')"
for p in $persistent; do
	check "sysupgrade keeps $p" grep -qx "$p" <<<"$kept"
done
show

echo "openwrt/tests: $checks checks passed, $failures failed (shell libraries: ${real:-stand-ins})"
[ "$failures" = 0 ]
