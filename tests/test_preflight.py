"""The API port is shared by the processes of one site (a shared database), never otherwise."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.support.processes import free_port
from vms.config import Config
from vms.preflight import StartupError, claim

SHARED_DATABASE = "postgresql://vms@127.0.0.1:5432/vms"


def _connect(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_two_processes_of_a_site_share_the_api_port(tmp_path: Path) -> None:
    """With a shared database, a second claim binds the same port and both accept."""
    port = free_port()
    first = Config(data_dir=tmp_path / "a", port=port, media_port=0, database_url=SHARED_DATABASE)
    second = Config(data_dir=tmp_path / "b", port=port, media_port=0, database_url=SHARED_DATABASE)
    held = [claim(first), claim(second)]
    try:
        for one in held:
            one.listen()
        for _ in range(8):
            _connect(port)
    finally:
        for one in held:
            one.release()


def test_without_a_shared_database_the_port_is_one_servers(tmp_path: Path) -> None:
    """On SQLite the port stays exclusive, even against a process that would share it."""
    port = free_port()
    shared = claim(
        Config(data_dir=tmp_path / "a", port=port, media_port=0, database_url=SHARED_DATABASE)
    )
    try:
        shared.listen()
        with pytest.raises(StartupError, match="address already in use"):
            claim(Config(data_dir=tmp_path / "b", port=port, media_port=0))
    finally:
        shared.release()
    alone = claim(Config(data_dir=tmp_path / "c", port=port, media_port=0))
    try:
        alone.listen()
        with pytest.raises(StartupError, match="address already in use"):
            claim(
                Config(
                    data_dir=tmp_path / "d", port=port, media_port=0, database_url=SHARED_DATABASE
                )
            )
    finally:
        alone.release()
