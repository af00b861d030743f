# Stand-in for OpenWrt's /lib/functions/procd.sh, written for probegate's tests (not
# OpenWrt's code): the procd_* functions an init script calls, building the same message
# (through procd_sim.py) and sending it with `ubus call service <method>`.

_procd_msg() { python3 "$PG_STANDIN/procd_sim.py" msg "$@"; }

procd_open_service() { _procd_msg open_service "$1" "$2"; }
procd_close_service() {
	service_triggers
	ubus call service "${1:-set}" "$(_procd_msg dump)"
}
procd_open_instance() { _procd_msg open_instance "$1"; }
procd_close_instance() { _procd_msg close_instance; }
procd_set_param() { _procd_msg set_param "$@"; }
procd_append_param() { _procd_msg append_param "$@"; }
procd_add_jail() { _procd_msg add_jail "$@"; }
procd_add_jail_mount() { _procd_msg jail_mount "$@"; }
procd_add_jail_mount_rw() { _procd_msg jail_mount_rw "$@"; }

procd_add_reload_trigger() {
	local name; name=$(basename "$initscript")
	for package in "$@"; do
		_procd_msg trigger config.change "$package" "/etc/init.d/$name" reload
	done
}

procd_add_raw_trigger() {
	local event="$1" delay="$2"; shift 2
	_procd_msg raw_trigger "$event" "$delay" "$@"
}

procd_kill() {
	ubus call service delete "{\"name\":\"$1\"${2:+,\"instance\":\"$2\"}}"
}

procd_running() {
	ubus call service list "{\"name\":\"$1\"}" | grep -q '"running": true'
}
