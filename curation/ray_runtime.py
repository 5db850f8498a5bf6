"""Starting or joining Ray, the same way for every job."""
from __future__ import annotations


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Start (or join) Ray once per process: the embedded local Ray when ``address`` is None."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, num_cpus=num_cpus, include_dashboard=False, logging_level="WARNING",
                 configure_logging=True, log_to_driver=True)
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = True
