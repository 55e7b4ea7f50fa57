"""`medlens serve --workers N`: N uvicorn processes, each listening on its own socket bound to the
same port with SO_REUSEPORT, so the kernel spreads new connections over them.

With uvicorn's own workers all processes accept from one shared socket and whichever is idle
takes the next connection: 32 keep-alive clients connecting one after the other all landed on
the same one of two workers, in 3 trials of 3, and the other idled for as long as they stayed
connected. uvicorn's supervisor still starts, watches and restarts the processes.
"""

from __future__ import annotations

import functools
import socket
from pathlib import Path

import uvicorn
from uvicorn.supervisors import Multiprocess

from medlens.errors import ConfigError


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` that other SO_REUSEPORT sockets may share."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port} ({err.strerror})", fix="choose another --port"
        ) from None
    return sock


def _worker(config: uvicorn.Config, sockets: list[socket.socket] | None = None) -> None:
    config.load()  # the app (its models) first: a listening worker is a ready one
    sock = reuseport_socket(config.host, config.port)
    sock.listen(config.backlog)
    uvicorn.Server(config).run(sockets=[sock])


def listeners(port: int) -> int:
    """How many sockets on this machine listen on TCP ``port`` (Linux; 0 elsewhere). Each
    worker listens once its models are loaded, so this counts the ready workers."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            count += state == "0A" and int(local.rsplit(":", 1)[1], 16) == port  # 0A: LISTEN
    return count


def run_workers(config: uvicorn.Config) -> None:
    """Serve ``config`` (with ``config.workers`` > 1) until SIGINT / SIGTERM."""
    if not hasattr(socket, "SO_REUSEPORT"):  # Windows: uvicorn's shared socket
        sock = config.bind_socket()
        Multiprocess(config, target=uvicorn.Server(config).run, sockets=[sock]).run()
        return
    # bound but never listening: it claims the port (a clear error now if it is taken, and a
    # fixed number for port 0) without joining the group the kernel hands connections to
    holder = reuseport_socket(config.host, config.port)
    config.port = int(holder.getsockname()[1])
    try:
        Multiprocess(config, target=functools.partial(_worker, config), sockets=[]).run()
    finally:
        holder.close()
