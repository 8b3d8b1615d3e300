"""Starts a moto server for stackproof and prints `READY host:port` once it listens.

argv: host port mode, where mode is `watch-stdin` (exit when stdin closes: the parent died or
let go of us) or `forever` (a background daemon, stopped with SIGTERM).
"""
import os
import sys
import threading

os.environ.setdefault("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")

from moto.server import ThreadedMotoServer  # noqa: E402

host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
server.start()
bound_host, bound_port = server.get_host_and_port()
print(f"READY {bound_host}:{bound_port}", flush=True)
if mode == "watch-stdin":
    sys.stdin.read()
    os._exit(0)
threading.Event().wait()
