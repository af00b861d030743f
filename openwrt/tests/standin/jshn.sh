# Stand-in for libubox's jshn.sh, written for probegate's tests (not libubox's code): the
# json_* functions OpenWrt's procd.sh builds its messages with, kept by procd_sim.py.
_jshn() { python3 "$PG_STANDIN/procd_sim.py" json "$@"; }
json_init() { _jshn init; }
json_cleanup() { _jshn init; }
json_set_namespace() { [ -n "$2" ] && eval "$2=''"; return 0; }
json_add_string() { _jshn add_string "$1" "$2"; }
json_add_int() { _jshn add_int "$1" "$2"; }
json_add_boolean() { _jshn add_boolean "$1" "$2"; }
json_add_double() { _jshn add_double "$1" "$2"; }
json_add_object() { _jshn add_object "$1"; }
json_close_object() { _jshn close_object; }
json_add_array() { _jshn add_array "$1"; }
json_close_array() { _jshn close_array; }
json_select() { _jshn select "$1"; }
json_get_values() { eval "$1=\"\$(_jshn get_values)\""; }
json_dump() { _jshn dump; }
