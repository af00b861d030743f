#!/usr/bin/env python3
"""A small model of procd for testing init and maintainer scripts off the router.

Written for probegate's tests, from procd's documented behaviour (service/instance.c,
service/service.c): not procd's code. Three entry points:

  procd_sim.py msg <op> ...      builds the JSON message procd.sh would send (our procd.sh
                                 stand-in calls it; state in $PG_ROOT/tmp/procd-msg.json)
  procd_sim.py ubus call service <method> <json>
                                 what `ubus` does with it: keeps services in
                                 $PG_ROOT/tmp/procd-state.json and logs what procd would do
                                 to $PG_ROOT/tmp/procd.log
  procd_sim.py fire <type> key=value ...
                                 a procd event (config.change, ...): runs the scripts of the
                                 triggers that match, as procd's trigger code does

Running an instance is modelled, not done: the instance's command is run once with
PG_PROBE=1, and the stand-in daemon answers at once whether it would keep running (exit 0)
or exit (non-zero). An exit is respawned as procd does (respawn_timeout later, given up
after respawn_retry quick exits), on a virtual clock ($PG_ROOT/tmp/clock, seconds).
"""

import hashlib
import json
import os
import subprocess
import sys

ROOT = os.environ.get("PG_ROOT", "/")
TMP = os.path.join(ROOT, "tmp")
MSG = os.path.join(TMP, "procd-msg.json")
STATE = os.path.join(TMP, "procd-state.json")
LOG = os.path.join(TMP, "procd.log")
CLOCK = os.path.join(TMP, "clock")


def load(path, default):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return default


def save(path, value):
    with open(path + ".tmp", "w") as f:
        json.dump(value, f, indent=1, sort_keys=True)
    os.replace(path + ".tmp", path)


def log(line):
    with open(LOG, "a") as f:
        f.write(f"t={now()} {line}\n")


def now():
    try:
        with open(CLOCK) as f:
            return int(f.read().strip() or 0)
    except FileNotFoundError:
        return 0


def set_clock(t):
    with open(CLOCK, "w") as f:
        f.write(str(t))


# --- the message procd.sh builds -------------------------------------------------------------

ARRAYS = {"command", "netdev", "file", "respawn", "watch", "watchdog"}
TABLES = {"env", "data", "limits"}
INTS = {"nice", "term_timeout"}
STRINGS = {"pidfile", "user", "group", "seccomp", "capabilities", "facility", "extroot",
           "overlaydir", "tmpoverlaysize", "vrf"}
BOOLS = {"stdout", "stderr", "no_new_privs"}
JAIL_FLAGS = {"log", "ubus", "udebug", "procfs", "sysfs", "ronly", "requirejail", "netns",
              "userns", "cgroupsns"}


def table_items(args):
    out = {}
    for a in args:
        key, _, value = a.partition("=")
        out[key] = value
    return out


def msg(op, args):
    m = load(MSG, {})
    inst = m.get("instances", {}).get(m.get("_current", ""), None)
    if op == "open_service":
        m = {"name": args[0], "instances": {}, "triggers": [], "_seq": 0}
        if len(args) > 1 and args[1]:
            m["script"] = args[1]
    elif op == "open_instance":
        m["_seq"] += 1
        name = args[0] if args and args[0] else f"instance{m['_seq']}"
        m["instances"][name] = {}
        m["_current"] = name
    elif op in ("set_param", "append_param"):
        kind, values = args[0], args[1:]
        if op == "append_param" and kind in inst:
            if kind in ARRAYS:
                inst[kind] += values
            elif kind in TABLES:
                inst[kind].update(table_items(values))
        elif kind in ARRAYS:
            inst[kind] = list(values)
        elif kind in TABLES:
            inst[kind] = table_items(values)
        elif kind in INTS:
            inst[kind] = int(values[0])
        elif kind in STRINGS:
            inst[kind] = values[0]
        elif kind in BOOLS:
            inst[kind] = values[0] == "1"
        # procd.sh ignores other types silently; so do we.
    elif op == "add_jail":
        inst["jail"] = {"name": args[0], "mount": {}}
        for flag in args[1:]:
            if flag in JAIL_FLAGS:
                inst["jail"][flag] = True
    elif op in ("jail_mount", "jail_mount_rw"):
        if "jail" in inst:
            for path in args:
                inst["jail"]["mount"][path] = "1" if op == "jail_mount_rw" else "0"
    elif op == "close_instance":
        if "respawn" in inst and not inst["respawn"]:
            inst["respawn"] = ["3600", "5", "5"]
        m.pop("_current", None)
    elif op == "trigger":
        # trigger <event> <package> <script...>: procd.sh's config trigger, 1000 ms delay.
        m["triggers"].append([args[0], ["if", ["eq", "package", args[1]],
                                        ["run_script"] + args[2:]], 1000])
    elif op == "raw_trigger":
        m["triggers"].append([args[0], [["run_script"] + args[2:]], int(args[1])])
    elif op == "dump":
        clean = {k: v for k, v in m.items() if not k.startswith("_")}
        print(json.dumps(clean))
        return
    save(MSG, m)


# --- jshn.sh's JSON builder (for OpenWrt's own procd.sh, which builds with json_*) -----------

JSHN = os.path.join(TMP, "jshn.json")


def jshn(op, args):
    """One json_* call; prints what the shell function should eval or print."""
    st = load(JSHN, {"root": {}, "path": []})

    def cur():
        node = st["root"]
        for key in st["path"]:
            node = node[key]
        return node

    def add(key, value):
        node = cur()
        if isinstance(node, list):
            node.append(value)
            return len(node) - 1
        node[key] = value
        return key

    if op == "init":
        st = {"root": {}, "path": []}
    elif op in ("add_string", "add_int", "add_boolean", "add_double"):
        key, value = args[0], args[1] if len(args) > 1 else ""
        if op == "add_int":
            value = int(value)
        elif op == "add_boolean":
            value = value not in ("0", "", "false")
        add(key, value)
    elif op in ("add_object", "add_array"):
        key = add(args[0] if args else "", {} if op == "add_object" else [])
        st["path"].append(key)
    elif op in ("close_object", "close_array"):
        if st["path"]:
            st["path"].pop()
    elif op == "select":
        if args[0] == "..":
            if st["path"]:
                st["path"].pop()
        else:
            node = cur()
            if isinstance(node, dict) and isinstance(node.get(args[0]), (dict, list)):
                st["path"].append(args[0])
            else:
                save(JSHN, st)
                sys.exit(1)
    elif op == "get_values":
        node = cur()
        values = node if isinstance(node, list) else list(node.values())
        print(" ".join(str(v) for v in values if not isinstance(v, (dict, list))))
    elif op == "dump":
        print(json.dumps(st["root"]))
    save(JSHN, st)


# --- procd's side of `ubus call service ...` -------------------------------------------------


def rooted(path):
    if ROOT == "/" or path.startswith(ROOT.rstrip("/") + "/"):
        return path
    return os.path.join(ROOT, path.lstrip("/"))


def file_sums(files):
    sums = []
    for f in files:
        try:
            with open(rooted(f), "rb") as h:
                sums.append((f, hashlib.md5(h.read()).hexdigest()))
        except OSError:
            sums.append((f, None))
    return sums


def ifindex(name):
    net = os.environ.get("PROBEGATE_NET", "/sys/class/net")
    try:
        with open(os.path.join(net, name, "ifindex")) as f:
            return int(f.read())
    except OSError:
        return 0


def fingerprint(inst):
    """What procd compares (instance_config_changed) to decide on a restart."""
    keys = ["command", "env", "nice", "user", "group", "respawn", "term_timeout", "stdout",
            "stderr", "no_new_privs", "jail", "capabilities", "seccomp", "limits", "data"]
    fp = {k: inst.get(k) for k in keys}
    fp["file"] = file_sums(inst.get("file", []))
    fp["netdev"] = [(n, ifindex(n)) for n in inst.get("netdev", [])]
    # As stored: compared with what an earlier call saved.
    return json.loads(json.dumps(fp))


def problems(inst):
    """What would stop procd or ujail from starting the instance as asked."""
    out = []
    user = inst.get("user")
    if user:
        try:
            with open(rooted("/etc/passwd")) as f:
                if not any(line.split(":")[0] == user for line in f):
                    out.append(f"user {user} does not exist")
        except OSError:
            out.append("no /etc/passwd")
    caps = inst.get("capabilities")
    if caps:
        try:
            with open(rooted(caps)) as f:
                json.load(f)
        except (OSError, ValueError) as e:
            out.append(f"capabilities {caps}: {e}")
    return out


def would_run(inst):
    env = dict(os.environ)
    env.update(inst.get("env", {}))
    env["PG_PROBE"] = "1"
    cmd = list(inst["command"])
    cmd[0] = rooted(cmd[0])
    return subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


def run_instance(service, name, inst):
    """Starts the instance, respawning it as procd would; returns its state."""
    why = problems(inst)
    if why:
        log(f"error {service}/{name}: {'; '.join(why)}")
        return "error"
    threshold, timeout, retry = (int(x) for x in inst.get("respawn", ["0", "0", "0"]))
    count = 0
    started = now()
    while True:
        if would_run(inst):
            log(f"running {service}/{name}")
            return "running"
        log(f"exit {service}/{name}")
        if "respawn" not in inst:
            return "stopped"
        count = count + 1 if now() - started < threshold else 0
        if count > retry > 0:
            log(f"crashloop {service}/{name} after {count} exits")
            return "crashloop"
        set_clock(now() + timeout)
        started = now()
        log(f"respawn {service}/{name}")


def service_set(message, add=False):
    state = load(STATE, {})
    name = message["name"]
    old = state.get(name, {"instances": {}})
    new = {"instances": {}, "triggers": message.get("triggers", []),
           "script": message.get("script")}
    if add:
        new["instances"] = dict(old["instances"])
    for iname, inst in message.get("instances", {}).items():
        fp = fingerprint(inst)
        before = old["instances"].get(iname)
        if before and before["fp"] == fp and before["state"] == "running":
            new["instances"][iname] = before
            log(f"unchanged {name}/{iname}")
            continue
        if before and before["state"] == "running":
            log(f"restart {name}/{iname}")
        else:
            log(f"start {name}/{iname}")
        new["instances"][iname] = {"fp": fp, "config": inst,
                                   "state": run_instance(name, iname, inst)}
    for iname, before in old["instances"].items():
        if iname not in new["instances"] and before["state"] == "running":
            log(f"stop {name}/{iname}")
    state[name] = new
    save(STATE, state)


def service_delete(message):
    state = load(STATE, {})
    name = message.get("name")
    if name in state:
        for iname, inst in state[name]["instances"].items():
            if inst["state"] == "running":
                log(f"stop {name}/{iname}")
        del state[name]
        log(f"delete {name}")
    save(STATE, state)


def ubus(args):
    if args[:2] != ["call", "service"]:
        print(f"ubus stand-in: unsupported {args}", file=sys.stderr)
        return 1
    method = args[2]
    message = json.loads(args[3]) if len(args) > 3 and args[3] else {}
    with open(os.path.join(TMP, "ubus.log"), "a") as f:
        f.write(json.dumps({"method": method, "message": message}) + "\n")
    if method in ("set", "add"):
        service_set(message, add=method == "add")
    elif method == "delete":
        service_delete(message)
    elif method == "list":
        state = load(STATE, {})
        out = {n: {"instances": {i: {"running": v["state"] == "running"}
                                 for i, v in s["instances"].items()}}
               for n, s in state.items() if not message.get("name") or n == message["name"]}
        print(json.dumps(out))
    elif method == "event":
        fire(message["type"], message.get("data", {}))
    return 0


# --- events and triggers ---------------------------------------------------------------------


def matches(cond, data):
    if not cond:
        return True
    op = cond[0]
    if op == "eq":
        return data.get(cond[1]) == cond[2]
    if op == "or":
        return any(matches(c, data) for c in cond[1:])
    if op == "and":
        return all(matches(c, data) for c in cond[1:])
    return False


def fire(event, data):
    log(f"event {event} {json.dumps(data, sort_keys=True)}")
    state = load(STATE, {})
    for name, service in state.items():
        for trigger in service.get("triggers", []):
            pattern, rule = trigger[0], trigger[1]
            if not (pattern == event or (pattern.endswith("*") and
                                         event.startswith(pattern[:-1]))):
                continue
            if rule and rule[0] == "if":
                if not matches(rule[1], data):
                    continue
                actions = rule[2:]
            else:
                actions = rule
            for action in actions:
                if action[0] == "run_script":
                    log(f"trigger {name}: {' '.join(action[1:])}")
                    script = action[1:]
                    # Executed, as procd does: the script's #! line picks rc.common.
                    subprocess.run([rooted(script[0])] + script[1:], check=False)


def main():
    os.makedirs(TMP, exist_ok=True)
    what, args = sys.argv[1], sys.argv[2:]
    if what == "msg":
        msg(args[0], args[1:])
    elif what == "json":
        jshn(args[0], args[1:])
    elif what == "ubus":
        sys.exit(ubus(args))
    elif what == "fire":
        fire(args[0], table_items(args[1:]))
    elif what == "state":
        print(json.dumps(load(STATE, {}), indent=1, sort_keys=True))
    else:
        sys.exit(f"procd_sim.py: unknown {what}")


if __name__ == "__main__":
    main()
