"""The cores a sweep's jobs share: how many jobs run at once, and how many CPU threads each of them gets, so that
parallel workers do not each size their thread pools to every core and fight over them."""

import os

from omegaconf import DictConfig, OmegaConf


def parallel_jobs(cfg: DictConfig, space: list[str]) -> int | None:
    """How many jobs can run at once: all of a basic sweep (the product of its value counts), an Optuna
    batch (`hydra.sweeper.n_jobs`); None when it cannot be told."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if "BasicSweeper" not in str(OmegaConf.select(cfg, "hydra.sweeper._target_")):
        batch = OmegaConf.select(cfg, "hydra.sweeper.n_jobs")
        return int(batch) if batch else None
    parser, count = OverridesParser.create(), 1
    try:
        for override in space:
            count *= len(list(parser.parse_override(override).sweep_string_iterator()))
    except Exception:  # noqa: BLE001 (sweeps it cannot enumerate, e.g. intervals)
        return None
    return count


def parallel_threads(jobs: int | None = None, cores: int | None = None) -> int | None:
    """CPU threads for a job that the joblib launcher runs beside others (cores / jobs at once), else None.
    Each job would otherwise size its thread pools to every core, and the workers would fight over them.
    `jobs`: how many the sweep can run at once, if known (4 jobs on 16 cores get 4 threads each, not 1)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    launcher = HydraConfig.get().launcher
    if "joblib" not in str(launcher.get("_target_", "")).lower():
        return None
    return threads_per_worker(launcher.get("n_jobs"), cores or os.cpu_count() or 1, jobs)


def threads_per_worker(n_jobs: int | None, cores: int, jobs: int | None = None) -> int:
    n_jobs = -1 if n_jobs is None else int(n_jobs)
    workers = cores + 1 + n_jobs if n_jobs < 0 else n_jobs  # joblib: -1 = every core, -2 = all but one
    if jobs:
        workers = min(workers, jobs)
    return max(1, cores // max(1, workers))
