"""A running Dask cluster as a sweep's executor (``record --scheduler tcp://HOST:PORT``).

Dask is optional (``pip install 'steptrace[dask]'``): it is imported only here, when a
scheduler is asked for. Start a cluster with ``dask scheduler`` on one machine and
``dask worker tcp://HOST:8786 --nthreads 1 --nworkers N`` on each (one thread per worker
process: a run's loop holds the GIL), with the same steptrace installed and the output folder
shared at the same path.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import socket
from collections.abc import Iterator
from concurrent.futures import Executor
from contextlib import contextmanager
from typing import Any

from ..errors import ConfigError

__all__ = ["CONNECT_SECONDS", "INSTALL", "connect", "dask_executor", "hosts_have_spare_cores"]

#: How long to try reaching a scheduler, and to wait for its first worker.
CONNECT_SECONDS = 5.0
INSTALL = "pip install 'steptrace[dask]'"


def connect(address: str, timeout: float = CONNECT_SECONDS) -> Any:
    """A :class:`distributed.Client` of the scheduler at ``address`` that has a worker, or a
    :class:`ConfigError` within about ``timeout`` seconds saying why not."""
    try:
        distributed = importlib.import_module("distributed")  # typed as Any: Dask is optional
    except ImportError:
        raise ConfigError(
            f"--scheduler sends the runs to a Dask cluster and needs Dask: {INSTALL}"
        ) from None
    try:
        _reachable(address, timeout)
        with _quiet():
            client = distributed.Client(address, timeout=timeout, set_as_default=False)
    except Exception as exc:  # refused, unknown host, not Dask at that port …
        why = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"cannot reach the Dask scheduler at {address} ({why}); start one with "
            "'dask scheduler' or check the address"
        ) from None
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        client.close()
        raise ConfigError(
            f"the Dask scheduler at {address} has no workers; start some with "
            f"'dask worker {address} --nthreads 1'"
        ) from exc
    return client


def _reachable(address: str, timeout: float) -> None:
    """Raise unless a Dask scheduler answers at ``address``: checked before a Client exists,
    since a Client that cannot connect takes seconds more to close, and says so at length."""
    comm_module: Any = importlib.import_module("distributed.comm")
    scheme, location = comm_module.parse_address(address)
    if scheme == "tcp":  # a refused port fails at once here; Dask would retry until timeout
        socket.create_connection(comm_module.parse_host_port(location), timeout=timeout).close()

    async def handshake() -> None:
        comm = await comm_module.connect(address, timeout=timeout)
        await comm.close()

    with _quiet():
        asyncio.run(handshake())


@contextmanager
def dask_executor(address: str, timeout: float = CONNECT_SECONDS) -> Iterator[Executor]:
    """The cluster at ``address`` as a :class:`concurrent.futures.Executor`, closed after use.

    >>> with dask_executor("tcp://127.0.0.1:8786") as ex:  # doctest: +SKIP
    ...     steptrace.sweep(["1e-9", "1e-8"], numerics="float64", executor=ex)
    """
    client = connect(address, timeout)
    try:
        yield client.get_executor()
    finally:
        with _quiet():
            client.close()


def hosts_have_spare_cores(executor: Executor) -> bool | None:
    """For a Dask client's executor: whether every host running its workers has at least
    twice as many cores as worker threads (so that each run may overlap its computing and its
    writing on a second core); None for another executor. Asked of the scheduler and the
    workers once per sweep; False if they cannot say."""
    client = getattr(executor, "_client", None)  # what Client.get_executor() wraps
    if client is None or type(executor).__module__.split(".")[0] != "distributed":
        return None
    try:
        workers = client.scheduler_info()["workers"]
        cores = client.run(_cores)
        threads: dict[str, int] = {}
        host_cores: dict[str, int] = {}
        for address, info in workers.items():
            host = str(info.get("host", address))
            threads[host] = threads.get(host, 0) + int(info.get("nthreads", 1))
            host_cores[host] = int(cores.get(address, 1))
    except Exception:  # an old scheduler, a worker gone: assume none to spare
        return False
    return bool(threads) and all(2 * threads[h] <= host_cores[h] for h in threads)


def _cores() -> int:
    """The cores this (worker) process may run on."""
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


@contextmanager
def _quiet() -> Iterator[None]:
    """Dask logs its retries and its closing: the user gets one line from us instead."""
    logger = logging.getLogger("distributed")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)
