"""`hydra/launcher=slurm`: hydra-submitit-launcher's SLURM launcher (one array task a job, requeued on
preemption and time-out), which also follows its jobs on a cluster without accounting (nnlab.job.slurm).
Hydra finds launchers only under `hydra_plugins`, hence this module; the job side (a requeued job resuming its
run) is in nnlab.job.slurm."""

from collections.abc import Sequence

try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
        SlurmLauncher as SubmititSlurmLauncher,
    )
except ImportError:  # the `slurm` extra is not installed: no launcher to offer
    SubmititSlurmLauncher = None

if SubmititSlurmLauncher is not None:

    class SlurmLauncher(SubmititSlurmLauncher):
        def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):
            from submitit.core.utils import FailedJobError, UncompletedJobError

            from nnlab.job.slurm import follow_without_accounting, job_failure

            follow_without_accounting()
            try:
                return super().launch(job_overrides, initial_job_idx)
            except (FailedJobError, UncompletedJobError) as err:  # submitit's message carries the job's whole log
                raise job_failure(err) from err
