"""Starting or joining Ray, the same way for every job, and the checks a job makes before it runs on a cluster.

Which Ray a job gets (``ensure_ray``):

* ``address`` None (the default): the job starts its own embedded Ray, whatever cluster Ray's temp folder last
  recorded (``ray_current_cluster``, left behind by a head that died without ``ray stop``) and whatever
  ``ray start`` runs on the machine. Only a job run by Ray Jobs (``ray job submit``) joins a cluster without
  being told: the job supervisor gives it the cluster in ``RAY_ADDRESS`` and marks it with
  ``RAY_JOB_CONFIG_JSON_ENV_VAR``. ``RAY_ADDRESS=host:port`` (or ``ray://``) in the environment counts as being
  told; an ``http://`` ``RAY_ADDRESS`` names a job server (for ``ray job submit``), not a cluster to join.
* ``address`` ``host:port``, ``ray://host:port`` or ``auto`` (the cluster ``ray start`` recorded on this
  machine): the job joins it, and fails within ``connect_timeout_s`` with ``RayClusterUnreachable`` naming
  the address when nothing answers there (``ray.init`` itself retries a dead address for minutes).

A job that writes to a lake it was told by a relative local path loses its output on a cluster (Ray Jobs runs
the entrypoint in a temporary copy of the working directory): ``check_lake_location`` refuses it, and every job
entry point calls it before any work.
"""
from __future__ import annotations

import os
import socket
import time

from curation.jobconfig import ConfigError

RAY_JOBS_MARKER = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray's job supervisor for the entrypoint it runs
RAY_ADDRESS_VAR = "RAY_ADDRESS"
CONNECT_TIMEOUT_S = 20.0


class RayClusterUnreachable(ConnectionError):
    """A job was told to join a Ray cluster that does not answer."""


def under_ray_jobs() -> bool:
    """True when this process is the entrypoint of a job submitted with ``ray job submit``."""
    return RAY_JOBS_MARKER in os.environ


def _env_cluster_address() -> str | None:
    """``RAY_ADDRESS`` when it names a cluster to join (not an ``http://`` job server), else None."""
    value = os.environ.get(RAY_ADDRESS_VAR, "").strip()
    if not value or value.startswith(("http://", "https://")):
        return None
    return value


def requested_address(address: str | None) -> str | None:
    """The cluster address the job was told to join, or None for its own embedded Ray."""
    if address is not None and address != "local":
        return address
    if address is None:
        return _env_cluster_address()
    return None


def joins_cluster(address: str | None) -> bool:
    """Whether a job with this configured address runs on a cluster (or under Ray Jobs) rather than locally."""
    return under_ray_jobs() or requested_address(address) is not None


def _resolve_auto() -> str:
    """The address ``ray start`` recorded on this machine (what ``auto`` means), or an error saying none is."""
    from ray._private import services

    recorded = services.find_bootstrap_address(None)
    running = sorted(services.find_gcs_addresses())
    if recorded is None and not running:
        raise RayClusterUnreachable(
            "ray address 'auto': no Ray cluster was started on this machine (`ray start --head`); "
            "give its address (host:port) or leave ray.address unset for the embedded local Ray")
    return recorded or running[0]


def _host_port(address: str) -> tuple[str, int]:
    bare = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = bare.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"ray address {address!r}: expected host:port, ray://host:port or auto")
    return host or "127.0.0.1", int(port)


def wait_for_cluster(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Return once something accepts connections at ``address``; ``RayClusterUnreachable`` after ``timeout_s``."""
    host, port = _host_port(address)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=2.0):
                return
        except OSError as error:
            if time.monotonic() >= deadline:
                raise RayClusterUnreachable(
                    f"no Ray cluster at {address}: nothing answers at {host}:{port} ({error}; tried for "
                    f"{timeout_s:.0f} s). Start it (`ray start --head`), fix the address, or leave ray.address "
                    "unset for the embedded local Ray") from error
        time.sleep(0.5)


def ensure_ray(address: str | None = None, num_cpus: int | None = None,
               connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Start the embedded Ray (``address`` None) or join the cluster at ``address``, once per process."""
    import ray

    if ray.is_initialized():
        return
    target = requested_address(address)
    if target is None and under_ray_jobs():
        target = os.environ.get(RAY_ADDRESS_VAR) or "auto"
    if target == "auto":
        target = _resolve_auto()
    if target is not None:
        wait_for_cluster(target, connect_timeout_s)
        num_cpus = None  # a cluster has its own resources
    ray.init(address=target or "local", num_cpus=num_cpus, include_dashboard=False, logging_level="WARNING",
             configure_logging=True, log_to_driver=True)
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = True


def is_relative_local(uri: str) -> bool:
    """A lake given as a relative filesystem path (``out/lake``, ``file://out/lake``)."""
    path = uri[len("file://"):] if uri.startswith("file://") else uri
    return "://" not in path and not os.path.isabs(path)


def check_lake_location(lake: str, address: str | None) -> None:
    """Refuse a relative local lake for a job that runs on a cluster or under Ray Jobs (its output would be lost).

    Every job entry point calls this after reading its config, before any work."""
    if not is_relative_local(lake) or not joins_cluster(address):
        return
    where = "under Ray Jobs (ray job submit)" if under_ray_jobs() else f"on the Ray cluster at {address}"
    raise ConfigError(
        f"lake {lake!r} is a relative local path and this job runs {where}. Ray Jobs runs the entrypoint in a "
        "temporary copy of the working directory, so the path would resolve inside that copy: the tables of "
        "earlier runs are not found there, and everything written is lost when the job ends (workers on other "
        "nodes would not see it either). Give an absolute path on storage every node shares "
        "(/mnt/shared/lake) or an object-store URI (s3://bucket/lake) as the config's lake (or --lake).")
