# Stand-in for OpenWrt's /lib/functions.sh, written for probegate's tests (not OpenWrt's
# code): the UCI reader and the package helpers that init and maintainer scripts use, with the
# behaviour OpenWrt's documents (default_postinst, default_prerm, add_group_and_user).

NO_EXPORT=1

list_contains() {
	eval "case \" \${$1} \" in *\" $2 \"*) return 0;; esac"
	return 1
}

# UCI: `uci export` prints shell the functions below read.
package() { :; }
config() { CONFIG_SECTION="${2:-cfg$$}"; eval "CONFIG_${CONFIG_SECTION}_TYPE=\$1"; }
option() { local name="$1"; shift; eval "CONFIG_${CONFIG_SECTION}_${name}=\$*"; }
list() { local name="$1"; shift; eval "CONFIG_${CONFIG_SECTION}_${name}=\"\${CONFIG_${CONFIG_SECTION}_${name}:+\$CONFIG_${CONFIG_SECTION}_${name} }\$*\""; }

config_load() {
	[ -n "$IPKG_INSTROOT" ] && return 0
	local data
	data="$(/sbin/uci -q export "$1")" || return 1
	eval "$data"
}

config_get() {
	if [ $# -le 2 ]; then
		eval "echo \"\${CONFIG_${1}_${2}}\""
	else
		eval "$1=\"\${CONFIG_${2}_${3}:-\$4}\""
	fi
}

config_get_bool() {
	local v
	config_get v "$2" "$3" "$4"
	case "$v" in
		1|on|true|yes|enabled) v=1 ;;
		0|off|false|no|disabled) v=0 ;;
		*) v="$4" ;;
	esac
	eval "$1=\$v"
}

uci_get() { /sbin/uci -q get "$1${2:+.$2}${3:+.$3}" || echo "$4"; }

user_exists() { grep -qs "^$1:" "${IPKG_INSTROOT}/etc/passwd"; }
group_exists() { grep -qs "^$1:" "${IPKG_INSTROOT}/etc/group"; }

# The first free id from 32768 in the file's third column.
_next_id() {
	local id=32768
	while cut -d: -f3 "$1" | grep -qx "$id"; do id=$((id + 1)); done
	echo "$id"
}

group_add() { echo "$1:x:$2:" >> "${IPKG_INSTROOT}/etc/group"; }
user_add() {
	local uid="${2:-$(_next_id "${IPKG_INSTROOT}/etc/passwd")}"
	echo "$1:x:$uid:${3:-$uid}:${4:-$1}:${5:-/var/run/$1}:${6:-/bin/false}" >> "${IPKG_INSTROOT}/etc/passwd"
	echo "$1:x:0:0:99999:7:::" >> "${IPKG_INSTROOT}/etc/shadow"
}

# Require-User (opkg's control file) or <pkg>.rusers (apk): "user[=uid]:group[=gid]".
add_group_and_user() {
	[ -z "$pkgname" ] && local pkgname="$(basename "${1%.*}")"
	local rusers
	rusers="$(sed -ne 's/^Require-User: *//p' "${root}/usr/lib/opkg/info/${pkgname}.control" 2>/dev/null)"
	[ -f "${root}/lib/apk/packages/${pkgname}.rusers" ] && rusers="$(cat "${root}/lib/apk/packages/${pkgname}.rusers")"
	local tuple user group uid gid
	for tuple in $rusers; do
		user="${tuple%%:*}"; group="${tuple#*:}"; group="${group%%:*}"
		uid=""; gid=""
		case "$user" in *=*) uid="${user#*=}"; user="${user%%=*}" ;; esac
		case "$group" in *=*) gid="${group#*=}"; group="${group%%=*}" ;; esac
		if [ -n "$group" ] && ! group_exists "$group"; then
			group_add "$group" "${gid:-$(_next_id "${IPKG_INSTROOT}/etc/group")}"
		fi
		[ -n "$group" ] && gid="$(grep "^$group:" "${IPKG_INSTROOT}/etc/group" | cut -d: -f3)"
		user_exists "$user" || user_add "$user" "$uid" "$gid"
	done
}

# The init scripts a package installed (its file list), each run with `command`.
_package_init_scripts() {
	local list="${root}/usr/lib/opkg/info/${pkgname}.list"
	[ -f "${root}/lib/apk/packages/${pkgname}.list" ] && list="${root}/lib/apk/packages/${pkgname}.list"
	grep -s "^/etc/init.d/" "$list"
}

default_postinst() {
	local root="${IPKG_INSTROOT}"
	[ -z "$pkgname" ] && local pkgname="$(basename "${1%.*}")"
	[ -e "${root}/usr/lib/opkg/info/${pkgname}.list" ] && add_group_and_user "$pkgname"
	local i
	for i in $(_package_init_scripts); do
		if [ -n "$root" ]; then
			sh "$root/etc/rc.common" "$root$i" enable
		else
			[ "$PKG_UPGRADE" = 1 ] || "$i" enable
			"$i" start
		fi
	done
	return 0
}

default_prerm() {
	local root="${IPKG_INSTROOT}"
	[ -z "$pkgname" ] && local pkgname="$(basename "${1%.*}")"
	local i
	for i in $(_package_init_scripts); do
		if [ -n "$root" ]; then
			sh "$root/etc/rc.common" "$root$i" disable
		else
			[ "$PKG_UPGRADE" = 1 ] || "$i" disable
			"$i" stop
		fi
	done
	return 0
}
