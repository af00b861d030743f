# Stand-in for OpenWrt's /lib/config/uci.sh, written for probegate's tests (not OpenWrt's
# code): the two functions OpenWrt's functions.sh and procd.sh call, on our uci stand-in.
uci_load() {
	local data
	data="$(/sbin/uci -q export "$1")" || return 1
	eval "$data"
}

uci_get() {
	/sbin/uci -q get "$1${2:+.$2}${3:+.$3}" || { [ -n "$4" ] && echo "$4"; }
}
