"""`hydra/launcher=ray`: each job of a sweep is a Ray task on a cluster that was started separately.

nnlab ships this instead of hydra-ray-launcher 1.2.2, which pins cloudpickle<3 against joblib 1.6's
cloudpickle>=3 (the joblib launcher's), and injects `object_store_memory` into `ray.init`, which then refuses to
join a running cluster (facebookresearch/hydra#2893). This one only joins: `ray.init(address=...)` with nothing
added, one `ray.remote` task per job, results back in the order of the jobs.

Hydra imports every module under hydra_plugins at start-up, so Ray is imported only when a sweep launches.
"""

import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import (
    JobReturn,
    configure_log,
    filter_overrides,
    run_job,
    setup_globals,
)
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)

FORWARDED_ENV = ("MLFLOW_", "KERAS_", "NNLAB_", "TF_CPP_")
# Never forwarded: a task's runtime_env is visible to everyone who can list the cluster's tasks. Workers sign in
# to a tracking server with ~/.mlflow/credentials (or the environment of `ray start`) instead.
SECRET_ENV = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


@dataclass
class RayConf:
    # Keyword arguments of ray.init; `auto` joins the cluster `ray start` runs on this node (or $RAY_ADDRESS).
    # A key set to null is left out.
    init: dict[str, Any] = field(default_factory=lambda: {"address": "auto"})
    # Keyword arguments of ray.remote for every job: what one job needs of a node (GPU jobs: num_gpus=1).
    # max_retries 0: a job retried after its worker died would log a second child run beside the first.
    remote: dict[str, Any] = field(default_factory=lambda: {"num_cpus": 1, "num_gpus": 0, "max_retries": 0})


@dataclass
class RayLauncherConf:
    _target_: str = "hydra_plugins.nnlab_ray_launcher.ray_launcher.RayLauncher"
    ray: RayConf = field(default_factory=RayConf)


ConfigStore.instance().store(group="hydra/launcher", name="ray", node=RayLauncherConf, provider="nnlab")


class RayLauncher(Launcher):
    def __init__(self, ray: DictConfig) -> None:
        self.ray_cfg = ray
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        connect(OmegaConf.to_container(self.ray_cfg.init, resolve=True))  # once: Optuna launches batch by batch
        import ray

        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(f"Ray launcher: {len(job_overrides)} jobs, each {dict(self.ray_cfg.remote)}")
        task = ray.remote(**OmegaConf.to_container(self.ray_cfg.remote, resolve=True))(run_task)
        state, refs = Singleton.get_state(), []
        for idx, overrides in enumerate(job_overrides, initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
                sweep_config.hydra.job.num = idx
            refs.append(task.remote(self.hydra_context, sweep_config, self.task_function, state))
        return ray.get(refs)


def connect(init: dict[str, Any]) -> None:
    """Join the cluster; a missing Ray or cluster ends the sweep in one sentence."""
    from nnlab.errors import NnlabError

    try:
        import ray
    except ImportError as err:
        raise NnlabError("hydra/launcher=ray needs Ray: pip install -e '.[ray]' (or `make ray`, which also "
                         "starts a local head)") from err
    if ray.is_initialized():
        return
    kwargs = {k: v for k, v in init.items() if v is not None}
    address = str(kwargs.get("address") or "auto")
    missing = f"no Ray cluster to join at address '{address}'"
    hint = ("start one with `make ray` (ray start --head), or point hydra.launcher.ray.init.address at a running "
            "head (HOST:6379)")
    if not reachable(address):  # ray.init would retry an address where nothing listens for minutes
        raise NnlabError(f"{missing}: nothing listens there; {hint}")
    kwargs["runtime_env"] = with_env(kwargs.get("runtime_env"))
    try:
        ray.init(**kwargs)
    except ConnectionError as err:
        raise NnlabError(f"{missing} ({err}); {hint}") from err


def reachable(address: str, timeout_s: float = 5) -> bool:
    """Whether something listens at HOST:PORT (also ray://HOST:PORT); other forms (auto) are Ray's to judge."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return True
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def with_env(runtime_env: Any) -> dict[str, Any]:
    """The sweep's runtime_env plus this shell's MLflow, Keras, nnlab and TensorFlow-logging variables but
    secrets: Ray workers inherit the environment of `ray start`, not of the process that launches the sweep (a
    server's URI and user name, KERAS_BACKEND). Variables the config sets itself win."""
    runtime_env = dict(runtime_env or {})
    ours = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV) and k not in SECRET_ENV}
    runtime_env["env_vars"] = ours | dict(runtime_env.get("env_vars") or {})
    return runtime_env


def run_task(hydra_context: HydraContext, sweep_config: DictConfig, task_function: TaskFunction,
             singleton_state: dict[Any, Any]) -> JobReturn:
    """One job, in a Ray worker: as Hydra's own launchers run it, from the folder the sweep was launched in."""
    import ray

    setup_globals()
    Singleton.set_state(singleton_state)
    context = ray.get_runtime_context()
    with open_dict(sweep_config):
        # Which node and task ran the job, on its MLflow runs (tracking.tags), as SLURM jobs carry their id.
        if OmegaConf.select(sweep_config, "tracking") is not None:
            sweep_config.tracking.tags = {**(sweep_config.tracking.tags or {}),
                                          "ray_node_ip": ray.util.get_node_ip_address(),
                                          "ray_task_id": context.get_task_id()}
        # The job's math and input pipeline keep to the CPUs Ray gave it, not every core of the node.
        cpus = context.get_assigned_resources().get("CPU")
        if OmegaConf.select(sweep_config, "trainer.threads", default=0) is None and cpus:
            sweep_config.trainer.threads = max(1, int(cpus))
    HydraConfig.instance().set_config(sweep_config)
    # A worker starts wherever its raylet runs; relative paths (hydra.sweep.dir, data) mean the launch folder,
    # which a cluster shares. The worker is reused by later tasks: its own folder is restored.
    own = os.getcwd()
    launched = str(sweep_config.hydra.runtime.cwd)
    if os.path.isdir(launched):
        os.chdir(launched)
    try:
        return run_job(hydra_context=hydra_context, task_function=task_function, config=sweep_config,
                       job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
    finally:
        os.chdir(own)
