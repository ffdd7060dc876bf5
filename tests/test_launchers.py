"""Sweeps beyond one process through Hydra's launcher plugins (the `cluster` extra): submitit_local and
joblib run a real two-job anode-train sweep here; hydra/launcher=slurm (configs/hydra/launcher/slurm.yaml)
is checked as far as a machine without SLURM allows: it composes, and the sbatch script it would submit
holds the settings of the config."""
import os
import signal
import subprocess
import sys
import time

import pytest
from omegaconf import OmegaConf

SWEEP = ["experiment=smoke", "trainer.threads=1", "trainer.max_steps_per_epoch=2", "probe.every=0",
         "dataset.train_size=128", "dataset.test_size=32", "trainer.seed=0,1"]


def submitit_plugin():
    return pytest.importorskip("hydra_plugins.hydra_submitit_launcher",
                               reason="hydra-submitit-launcher is not installed (pip install -e '.[cluster]')")


# anode-train's main() in a sweep process whose submitit gives up on a missing result after 1 s instead of its
# 15 s allowance for slow shared filesystems (submitit's own tests set it to 0); results here land on local disk
QUICK_RESULTS = ("import submitit.core.core\nsubmitit.core.core.Job._results_timeout_s = 1\n"
                 "from anode_bench.train import main\nmain()")


def anode_train(args, cwd, python=("-m", "anode_bench.train"), **kwargs):
    """anode-train as a subprocess in cwd (so nothing lands in the repository's outputs/), one torch thread."""
    return subprocess.Popen([sys.executable, *python, *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "1"}, **kwargs)


def finished(process, timeout=240):
    stdout, stderr = process.communicate(timeout=timeout)
    return process.returncode, stdout, stderr


def job_dirs(sweep):
    return sorted(d for d in sweep.iterdir() if d.is_dir() and d.name[0].isdigit())


def flat(node, prefix=""):
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else None
    if items is None:
        return {prefix: node}
    return {k: v for key, value in items for k, v in flat(value, f"{prefix}.{key}" if prefix else str(key)).items()}


def assert_two_completed_jobs_differing_only_in_seed(sweep):
    jobs = job_dirs(sweep)
    assert [d.name.split("_")[0] for d in jobs] == ["0", "1"], jobs  # subdir: ${hydra.job.num}_${override_dirname}
    for job in jobs:
        assert OmegaConf.load(job / "metrics.json").status == "completed", job
    configs = [flat(OmegaConf.to_container(OmegaConf.load(job / ".hydra" / "config.yaml"))) for job in jobs]
    assert {key for key in configs[0].keys() | configs[1].keys() if configs[0].get(key) != configs[1].get(key)} == {
        "trainer.seed"}
    assert [c["trainer.seed"] for c in configs] == [0, 1]
    return jobs


@pytest.mark.slow
def test_a_submitit_local_sweep_runs_each_job_as_a_submitit_job(tmp_path):
    """hydra/launcher=submitit_local: both jobs of a seed sweep finish (metrics.json: completed) in Hydra's usual job
    dirs, their configs differ in the seed alone, and each went through submitit: the job's hydra.job.id names a
    folder in <sweep>/.submitit holding submitit's log of the job and its result. The jobs inherit the environment
    (OMP_NUM_THREADS=1 here). About 10 s on 2 cores."""
    submitit_plugin()
    sweep = tmp_path / "sweep"
    code, stdout, stderr = finished(anode_train(["-m", "hydra/launcher=submitit_local", *SWEEP,
                                                 f"hydra.sweep.dir={sweep}"], tmp_path))
    assert code == 0, stderr[-3000:]
    assert "Submitit 'local' sweep output dir" in stdout + stderr
    for job in assert_two_completed_jobs_differing_only_in_seed(sweep):
        hydra = OmegaConf.load(job / ".hydra" / "hydra.yaml").hydra
        assert hydra.launcher._target_.endswith("submitit_launcher.LocalLauncher")
        submitit_dir = sweep / ".submitit" / str(hydra.job.id)
        assert (submitit_dir / f"{hydra.job.id}_0_result.pkl").exists()
        assert "Job completed successfully" in (submitit_dir / f"{hydra.job.id}_0_log.out").read_text()


@pytest.mark.slow
def test_a_joblib_sweep_runs_its_jobs_in_parallel_worker_processes(tmp_path):
    """hydra/launcher=local_parallel (joblib, configs/hydra/launcher/local_parallel.yaml) runs the two jobs in
    n_jobs=2 loky worker processes; both finish, with configs differing in the seed alone. About 9 s on 2 cores."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher",
                        reason="hydra-joblib-launcher is not installed (pip install -e '.[cluster]')")
    sweep = tmp_path / "sweep"
    code, stdout, stderr = finished(anode_train(["-m", "hydra/launcher=local_parallel", *SWEEP,
                                                 f"hydra.sweep.dir={sweep}"], tmp_path))
    assert code == 0, stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2,backend=loky" in stdout + stderr
    for job in assert_two_completed_jobs_differing_only_in_seed(sweep):
        hydra = OmegaConf.load(job / ".hydra" / "hydra.yaml").hydra
        assert hydra.launcher._target_.endswith("joblib_launcher.JoblibLauncher") and hydra.launcher.n_jobs == 2


def test_the_slurm_launcher_config_composes(tmp_path):
    """`anode-train --cfg hydra hydra/launcher=slurm hydra.launcher.partition=gpu` prints submitit's SlurmLauncher with
    one task and one GPU per job, the partition given, SIGTERM ahead of the time limit and submitit's files in the sweep
    dir. There is no SLURM here: composition and the sbatch script (next test) are what can be checked."""
    submitit_plugin()
    code, stdout, stderr = finished(anode_train(["--cfg", "hydra", "--resolve", "hydra/launcher=slurm",
                                                 "hydra.launcher.partition=gpu", "hydra.sweep.dir=SWEEP"], tmp_path), 60)
    assert code == 0, stderr[-3000:]
    launcher = OmegaConf.create(stdout).hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == ("gpu", 1, 1, 1)
    assert launcher.additional_parameters.signal == "TERM@120" and launcher.max_num_timeout == 0
    assert launcher.submitit_folder == "SWEEP/.submitit/%j"


def test_the_slurm_sweep_submits_one_array_job_with_the_configs_settings(tmp_path, monkeypatch):
    """What a two-job sweep with hydra/launcher=slurm hands to sbatch: one job array of two tasks, one GPU, one task
    and the config's time, memory and cores each, the partition given, `--signal=TERM@120`, logs under the sweep dir,
    and srun running this Python interpreter (so the environment must be visible on the compute nodes). Fake `srun`
    and `sbatch` (it answers a job id) stand in for SLURM; the launcher is stopped right after submission."""
    submitit_plugin()
    import submitit
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from anode_bench.config import CONFIG_DIR

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in [("srun", "exit 1"), ("sbatch", "echo 'Submitted batch job 4242'")]:
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    class Submitted(Exception):
        pass

    map_array = submitit.AutoExecutor.map_array

    def submit_then_stop(self, fn, *iterable):
        raise Submitted(map_array(self, fn, *iterable))

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", submit_then_stop)
    sweep = tmp_path / "sweep"
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", return_hydra_config=True, overrides=[
            "hydra/launcher=slurm", "hydra.launcher.partition=gpu", f"hydra.sweep.dir={sweep}"])
    launcher = instantiate(cfg.hydra.launcher)
    launcher.setup(hydra_context=None, task_function=None, config=cfg)
    with pytest.raises(Submitted) as submitted:
        launcher.launch([["grad=direct"], ["grad=aca"]], initial_job_idx=0)
    assert [job.job_id for job in submitted.value.args[0]] == ["4242_0", "4242_1"]
    [script] = [path.read_text() for path in (sweep / ".submitit").glob("*/*_submission.sh")]  # the sbatch file
    for line in ["--array=0-1%2", "--partition=gpu", "--gpus-per-node=1", "--ntasks-per-node=1", "--nodes=1",
                 "--cpus-per-task=4", "--mem=16GB", "--time=1440", "--signal=TERM@120",
                 f"--output={sweep}/.submitit/%A_%a/%A_%a_0_log.out"]:
        assert f"#SBATCH {line}\n" in script, line
    assert f"srun --unbuffered --output {sweep}/.submitit" in script and sys.executable in script
    assert sorted(p.name for p in (sweep / ".submitit").glob("4242_*/*_submitted.pkl")) == [
        "4242_0_submitted.pkl", "4242_1_submitted.pkl"]  # each job's pickled call, for the compute node


@pytest.mark.slow
def test_sigterm_to_a_submitit_job_checkpoints_it_and_the_job_resumes_in_place(tmp_path):
    """slurm.yaml has SLURM send SIGTERM 120 s before the time limit. Here SIGTERM goes to a submitit_local job
    (its controller forwards it, as slurmstepd would) after its first epoch: anode-train, running under submitit's
    signal handlers, checkpoints after the current step and names the resume; submitit reports the job as
    uncompleted, so the sweep exits 1. The same sweep command with trainer.resume=true and the job dir as
    hydra.sweep.subdir (quoted: the name holds commas) continues the job to `completed`. The stopped sweep's
    submitit waits 1 s, not 15, for the result the job never writes (QUICK_RESULTS)."""
    submitit_plugin()
    sweep = tmp_path / "sweep"
    run = ["hydra/launcher=submitit_local", "experiment=smoke", "trainer.threads=1", "dataset.train_size=512",
           "dataset.test_size=64", "trainer.epochs=3", "probe.every=0", f"hydra.sweep.dir={sweep}"]
    process = anode_train(["-m", *run], tmp_path, python=("-c", QUICK_RESULTS))
    deadline = time.time() + 180
    while not list(sweep.glob("0_*/checkpoints/*.pt")):  # the first epoch is done: stop the job in its second
        assert process.poll() is None and time.time() < deadline, "the job ended before its first checkpoint"
        time.sleep(0.05)
    [controller] = [int(d.name) for d in (sweep / ".submitit").iterdir() if d.name.isdigit()]
    os.kill(controller, signal.SIGTERM)
    code, stdout, stderr = finished(process)
    assert code == 1 and "has not produced any output" in stderr, stderr[-3000:]
    [job] = job_dirs(sweep)
    assert "continue with trainer.resume=true" in (job / "train.log").read_text()
    assert len(list((job / "checkpoints").glob("*.pt"))) == 2 and not (job / "metrics.json").exists()

    code, stdout, stderr = finished(anode_train(["-m", *run, "trainer.resume=true",
                                                 f"hydra.sweep.subdir='{job.name}'"], tmp_path))
    assert code == 0, stderr[-3000:]
    assert job_dirs(sweep) == [job] and "resuming from" in (job / "train.log").read_text()
    metrics = OmegaConf.load(job / "metrics.json")
    assert (metrics.status, metrics.epochs) == ("completed", 3)


@pytest.mark.slow
def test_a_job_refused_under_submitit_fails_alone_and_writes_nothing_after_its_line(tmp_path):
    """The refused job's run dir is removed, and the log file Hydra opened there is closed with it: submitit logs
    a line after every job, which would otherwise recreate that dir (or, for a run refused because another
    holds the dir, append to the other's train.log), crash the job and end the sweep before job 1 is done."""
    submitit_plugin()
    sweep = tmp_path / "sweep"
    code, stdout, stderr = finished(anode_train(["-m", "hydra/launcher=submitit_local", "experiment=smoke", "trainer.threads=1",
                                                 "trainer.max_steps_per_epoch=1", "probe.every=0", "trainer.seed=-1,0",
                                                 f"hydra.sweep.dir={sweep}"], tmp_path))
    assert code == 1, stderr[-3000:]
    # the job's own line goes to submitit's log of it; the sweep reports the refusal it came back with
    assert "anode-train: job 0 of the sweep was refused: trainer.seed must be >= 0 or null (a random seed), got -1" in stderr
    assert [d.name for d in job_dirs(sweep)] == ["1_trainer.seed=0"]
    assert OmegaConf.load(sweep / "1_trainer.seed=0" / "metrics.json").status == "completed"
    assert f"anode-train: sweep of 1 run (1 completed) in {sweep}" in stderr
