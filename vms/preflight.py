"""Before anything is created: the data directory is writable and ours, and both ports bind.

`serve` claims all of this first, so a start that cannot work fails in one line with nothing
half done: no operator account whose one-time password nobody saw, no process alive but
listening nowhere, no second server writing into the same directory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from vms.config import Config

LOCK_FILE = "server.lock"


class StartupError(Exception):
    """The service cannot start; the message is the whole story, for one line on stderr."""


def _reason(exc: OSError) -> str:
    text = exc.strerror or type(exc).__name__
    return text[:1].lower() + text[1:]


@dataclass
class Claim:
    """What a starting server holds: the data directory's lock and its listening sockets."""

    lock: int
    api: list[socket.socket] = field(default_factory=list)
    media: list[socket.socket] = field(default_factory=list)

    def listen(self, backlog: int = 128) -> None:
        """Start accepting on every socket (the sites serve what queues up when they start)."""
        for sock in (*self.api, *self.media):
            try:
                sock.listen(backlog)
            except OSError as exc:
                host, port = sock.getsockname()[:2]
                raise StartupError(f"cannot listen on {host}:{port}: {_reason(exc)}") from None

    def release(self) -> None:
        """Close the sockets (if still ours) and let the data directory go."""
        for sock in (*self.api, *self.media):
            sock.close()
        os.close(self.lock)


def lock_data_dir(data_dir: Path) -> int:
    """Create `data_dir` if needed and hold its lock; the lock's descriptor.

    The kernel drops the lock when the process ends however it ends, so a killed server
    never leaves a stale lock behind; the pid in the file is only for the message.
    """
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StartupError(
            f"cannot write to the data directory {data_dir}: {_reason(exc)}"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StartupError(f"{data_dir} is in use by another server (pid {holder})") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _probe_writable(data_dir)
    except OSError as exc:
        os.close(fd)
        raise StartupError(
            f"cannot write to the data directory {data_dir}: {_reason(exc)}"
        ) from None
    return fd


def _probe_writable(data_dir: Path) -> None:
    """Raise OSError unless a file can be created and written in `data_dir`."""
    probe = data_dir / f".write-test-{os.getpid()}"
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, b"ok")
    finally:
        os.close(fd)
        probe.unlink()


def bind(host: str, port: int, setting: str, *, shared: bool = False) -> list[socket.socket]:
    """Sockets bound to host:port (one per address the host names), not yet listening.

    Bound, the port is ours; `Claim.listen` makes both accept just before the first-start
    password is printed, so it is printed only once both ports listen.
    `setting` is what the operator can change, for the error message. With `shared`, other
    processes of this user may bind the same port (SO_REUSEPORT) and the kernel spreads new
    connections among them.
    """
    where = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise StartupError(f"cannot listen on {where}: {exc.strerror} ({setting})") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _name, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if shared:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.setblocking(False)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else _reason(exc)
        raise StartupError(f"cannot listen on {where}: {reason} ({setting})") from None
    return sockets


def claim(config: Config) -> Claim:
    """The data directory's lock and both ports, or StartupError with nothing left behind."""
    created = not config.data_dir.exists()
    held = Claim(lock_data_dir(config.data_dir))
    try:
        # Processes of one site share the database, so they may share the API port too.
        shared = bool(config.database_url)
        held.api = bind(config.host, config.port, "set VMS_PORT or --port", shared=shared)
        if config.media_port:
            held.media = bind(config.host, config.media_port, "set VMS_MEDIA_PORT or --media-port")
    except StartupError:
        held.release()
        if created:
            # Ours and empty but for the lock: a failed first start leaves no trace.
            with contextlib.suppress(OSError):
                (config.data_dir / LOCK_FILE).unlink()
                config.data_dir.rmdir()
        raise
    return held


def holder(data_dir: Path) -> int | None:
    """The pid of the server holding `data_dir`, or None if no server runs on it."""
    try:
        fd = os.open(data_dir / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            text = os.pread(fd, 32, 0).decode(errors="replace").strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
