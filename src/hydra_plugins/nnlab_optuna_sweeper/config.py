"""`hydra/sweeper=optuna`'s settings, as hydra-optuna-sweeper named them (a user's YAML keeps working), plus
`pruner`; samplers are the group `hydra/sweeper/sampler` (tpe, random, grid, cmaes, nsgaii)."""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class TPESamplerConfig:
    _target_: str = "optuna.samplers.TPESampler"
    seed: int | None = None
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    multivariate: bool | None = None
    constant_liar: bool = True  # trials asked while others run (n_jobs > 1, several processes) spread out


@dataclass
class RandomSamplerConfig:
    _target_: str = "optuna.samplers.RandomSampler"
    seed: int | None = None


@dataclass
class GridSamplerConfig:
    _target_: str = "optuna.samplers.GridSampler"
    seed: int | None = None  # the search space comes from `params` (discrete values only)


@dataclass
class CmaEsSamplerConfig:
    _target_: str = "optuna.samplers.CmaEsSampler"
    seed: int | None = None
    n_startup_trials: int = 1


@dataclass
class NSGAIISamplerConfig:
    _target_: str = "optuna.samplers.NSGAIISampler"
    seed: int | None = None
    population_size: int = 50


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.nnlab_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    _recursive_: bool = False  # sampler and pruner arrive as configs: the sweeper and its jobs build them
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])
    sampler: Any = MISSING
    # median | percentile | hyperband | successive_halving | none (nnlab.job.search.PRUNERS), or Optuna's class
    # with its arguments: {_target_: optuna.pruners.MedianPruner, n_startup_trials: 3}
    pruner: Any = None
    direction: Any = "minimize"  # or a list of directions (several objectives; no pruning then)
    # An SQLite/PostgreSQL URL: the study lasts, and every process running the command joins it. null: a journal
    # file in the sweep folder (the study lives with that folder).
    storage: Any = None
    study_name: str | None = None
    n_trials: int = 20  # in the study, in total: a rerun continues up to it
    n_jobs: int = 2  # trials launched at once (a launcher batch)
    max_failure_rate: float = 0.0
    params: dict[str, str] | None = None


store = ConfigStore.instance()
store.store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="nnlab")
for name, node in (("tpe", TPESamplerConfig), ("random", RandomSamplerConfig), ("grid", GridSamplerConfig),
                   ("cmaes", CmaEsSamplerConfig), ("nsgaii", NSGAIISamplerConfig)):
    store.store(group="hydra/sweeper/sampler", name=name, node=node, provider="nnlab")
