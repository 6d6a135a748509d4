"""A test guest that tries to reach out of its sandbox with Python's own APIs: a file, the
environment, a TCP socket, a sleep. Each probe is a dynamic read whose key tells what it got. Built with
componentize-py's default WASI imports (no --stub-wasi), so every call below reaches the host's
WASI, which grants nothing."""

import os
import socket
import time

from cachelet_policy import CachePolicy

sandbox = CachePolicy("sandbox-python", "0.1.0")


def outcome(probe):
    try:
        return probe()
    except Exception as e:  # what the guest gets instead
        return f"denied:{type(e).__name__}"


def rule(text):
    return sandbox.rule(f"probe:{text}", ttl=0)


@sandbox.read_rule("probe_file", params=["path"])
def probe_file(args):
    def read():
        with open(args["path"], "rb") as f:
            return f"read:{len(f.read())}"
    return rule(outcome(read))


@sandbox.read_rule("probe_dir", params=["path"])
def probe_dir(args):
    return rule(outcome(lambda: f"listed:{len(os.listdir(args['path']))}"))


@sandbox.read_rule("probe_env", params=["name"])
def probe_env(args):
    return rule(f"env:{len(os.environ)}:{os.environ.get(args['name'], 'none')}")


@sandbox.read_rule("probe_socket", params=["port"])
def probe_socket(args):
    def connect():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(1)
            s.connect(("127.0.0.1", args["port"]))
            return "connected"
    return rule(outcome(connect))


@sandbox.read_rule("probe_sleep", params=["seconds"])
def probe_sleep(args):
    time.sleep(args["seconds"])  # the host traps the call: a policy cannot wait
    return rule("slept")


sandbox.read("get_user", key="user:{user_id}", ttl=300)

Policy = sandbox.export()
