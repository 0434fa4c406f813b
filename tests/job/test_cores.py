"""How a sweep's jobs share the cores (nnlab.job.cores)."""

from omegaconf import OmegaConf

from nnlab.job.cores import parallel_jobs, threads_per_worker


def test_threads_per_worker_follow_joblibs_n_jobs():
    assert threads_per_worker(2, cores=8) == 4 and threads_per_worker(4, cores=2) == 1
    assert threads_per_worker(-1, cores=8) == 1 and threads_per_worker(None, cores=8) == 1  # one worker a core
    assert threads_per_worker(-5, cores=8) == 2  # joblib's -5: all but four cores, i.e. 4 workers
    assert threads_per_worker(-1, cores=16, jobs=4) == 4  # a small sweep on a big machine: the cores shared out


def test_parallel_jobs_counts_a_basic_sweep_and_an_optuna_batch():
    target = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
    basic = OmegaConf.create({"hydra": {"sweeper": {"_target_": target}}})
    assert parallel_jobs(basic, ["model.width=64,128,256", "trainer.loss=mse,mae", "model.depth=range(1,5)"]) == 24
    assert parallel_jobs(basic, []) == 1
    optuna = OmegaConf.create({"hydra": {"sweeper": {"_target_": "hydra_plugins.OptunaSweeper", "n_jobs": 3}}})
    assert parallel_jobs(optuna, ["optimizer.learning_rate=interval(1e-4,1e-2)"]) == 3
