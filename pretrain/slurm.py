"""Render and submit the SLURM batch script for a multi-node DeepSpeed run (``make slurm``).

  python -m pretrain.slurm --model t5-pegasus --nodes 2 --gpus-per-node 8 [--partition P]
                           [--time HH:MM:SS] [--size base] [--run DIR] [--dry-run] [key=value ...]

The script is ``slurm/pretrain.sbatch`` with ``slurm/profiles/<gpu|cpu>.sbatch``
filled in (``--gpus-per-node 0`` selects the CPU profile: one gloo task per node).
It runs the data stages once, then ``srun`` starts one ``pretrain.train`` task per
GPU; SLURM's warning signal (``--signal=B:USR1@SECONDS``) makes training checkpoint
and the job requeue itself, and the rerun resumes from that checkpoint.

Every value that reaches the script is validated: ``#SBATCH`` values must match a
strict pattern (no spaces, quotes or newlines) and shell values are ``shlex``-quoted,
so no argument can inject a command. The rendered script is kept as
``RUN/slurm/<job name>.sbatch``; ``--dry-run`` prints it instead of submitting.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from pretrain.config import REPO_ROOT, ConfigError, config_path, load_config, models

SLURM_DIR = REPO_ROOT / "slurm"
TEMPLATE = SLURM_DIR / "pretrain.sbatch"

# What an #SBATCH value may contain: sbatch reads these lines itself, not the shell.
SAFE_PATH = re.compile(r"^[A-Za-z0-9_./+@=,:%-]+$")
PARTITION = re.compile(r"^[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*$")
TIME = re.compile(r"^(\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d+|\d+-\d+:\d{1,2}|\d+-\d+:\d{1,2}:\d{1,2}"
                  r"|UNLIMITED|INFINITE)$")
OPTION = re.compile(r"^--[a-z][a-z0-9-]*(=[A-Za-z0-9_./+@=,:%-]+)?$")


class SlurmError(ValueError):
    """A bad argument for the batch script (one line)."""


@dataclass
class JobSpec:
    model: str
    nodes: int = 1
    gpus_per_node: int = 0                  # 0 = CPU profile
    size: str = "tiny"
    run_dir: str = ""                       # default runs/<model>, made absolute
    partition: str = ""
    time: str = ""
    cpus_per_task: int = 0                  # 0 = cluster default
    tasks_per_node: int = 0                 # 0 = GPUs per node (GPU) or 1 (CPU)
    warn_seconds: int = 120                 # USR1 this long before the time limit
    overrides: list[str] = field(default_factory=list)
    python: str = ""                        # interpreter on the nodes (default: this one, i.e. .venv)
    directives: list[str] = field(default_factory=list)   # extra "#SBATCH --x=y" lines
    prepare: bool = True                    # run the data stages in the job before training

    @property
    def profile(self) -> str:
        return "gpu" if self.gpus_per_node > 0 else "cpu"

    @property
    def job_name(self) -> str:
        return f"zh-{self.model}-{self.size}"


def validate(spec: JobSpec) -> JobSpec:
    """Check every field and fill defaults; raise SlurmError naming the bad value."""
    if not spec.model:
        raise SlurmError(f"MODEL is required (valid: {'|'.join(models())})")
    if spec.model not in models():
        raise SlurmError(f"unknown MODEL '{spec.model}' (valid: {'|'.join(models())})")
    for name in ("nodes", "gpus_per_node", "cpus_per_task", "tasks_per_node", "warn_seconds"):
        value = getattr(spec, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise SlurmError(f"{name.upper()} must be a non-negative integer, got {value!r}")
    if spec.nodes < 1:
        raise SlurmError(f"NODES must be >= 1, got {spec.nodes}")
    if spec.partition and not PARTITION.match(spec.partition):
        raise SlurmError(f"PARTITION {spec.partition!r} is not a partition name (letters, digits, _ . -)")
    if spec.time and not TIME.match(spec.time):
        raise SlurmError(f"TIME {spec.time!r} is not a SLURM time (minutes, hh:mm:ss or d-hh:mm:ss)")
    for d in spec.directives:
        if not OPTION.match(d):
            raise SlurmError(f"sbatch option {d!r} must look like --name=value without spaces or quotes")
    # The config must load with these overrides (so a typo fails here, not on the cluster).
    try:
        cfg = load_config(config_path(spec.model), list(spec.overrides), size=spec.size)
    except ConfigError as exc:
        raise SlurmError(str(exc)) from None
    spec.run_dir = os.path.abspath(spec.run_dir or cfg.run_dir)
    if not SAFE_PATH.match(spec.run_dir):
        raise SlurmError(f"RUN {spec.run_dir!r}: the log path goes on an #SBATCH line, so it may only "
                         f"contain letters, digits and _ . / + @ = , : % -")
    spec.python = spec.python or os.path.abspath(sys.executable)   # not resolved: keep the venv
    if spec.tasks_per_node == 0:
        spec.tasks_per_node = spec.gpus_per_node or 1
    return spec


def _profile(name: str) -> tuple[str, str]:
    """(#SBATCH directives, environment lines) of slurm/profiles/<name>.sbatch."""
    text = (SLURM_DIR / "profiles" / f"{name}.sbatch").read_text(encoding="utf-8")
    directives, _, env = text.partition("##ENV\n")
    return directives.rstrip("\n"), env.rstrip("\n")


def render(spec: JobSpec) -> str:
    """The batch script for a validated JobSpec."""
    spec = validate(spec)
    q = shlex.quote
    overrides = [*spec.overrides, f"run_dir={spec.run_dir}"]
    launch = ["--model", spec.model, "--size", spec.size, *overrides]
    train = ["--config", f"configs/{spec.model}.yaml", "--size", spec.size, *overrides]
    optional = [f"#SBATCH --partition={spec.partition}" if spec.partition else "",
                f"#SBATCH --time={spec.time}" if spec.time else "",
                f"#SBATCH --cpus-per-task={spec.cpus_per_task}" if spec.cpus_per_task else "",
                *(f"#SBATCH {d}" for d in spec.directives)]
    directives, environment = _profile(spec.profile)
    values = {
        "OPTIONAL_DIRECTIVES": "\n".join(line for line in optional if line),
        "MODEL": spec.model, "SIZE": spec.size, "PROFILE": spec.profile, "JOB_NAME": spec.job_name,
        "NODES": str(spec.nodes), "TASKS_PER_NODE": str(spec.tasks_per_node),
        "GPUS_PER_NODE": str(spec.gpus_per_node), "WARN_SECONDS": str(spec.warn_seconds),
        "PREPARE": "1" if spec.prepare else "0", "RUN_DIR": spec.run_dir, "REPO_Q": q(str(REPO_ROOT)), "PYTHON_Q": q(spec.python),
        "LAUNCH_ARGS_Q": " ".join(map(q, launch)), "TRAIN_ARGS_Q": " ".join(map(q, train)),
    }
    # Profile blocks go in first (they hold placeholders too), then one pass over the values,
    # so nothing a user typed is ever read as a placeholder.
    text = TEMPLATE.read_text(encoding="utf-8")
    text = text.replace("{{PROFILE_DIRECTIVES}}", directives).replace("{{PROFILE_ENVIRONMENT}}", environment)
    text = re.sub(r"\{\{([A-Z_]+)\}\}", lambda m: values[m.group(1)], text)
    text = re.sub(r"\n{3,}", "\n\n", text.replace("\n\n#SBATCH", "\n#SBATCH"))
    return text


def write_script(spec: JobSpec, text: str) -> Path:
    path = Path(spec.run_dir) / "slurm" / f"{spec.job_name}.sbatch"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def submit(script: Path, sbatch_args: list[str] = ()) -> str:
    """sbatch the script; return the job id."""
    proc = subprocess.run(["sbatch", "--parsable", *sbatch_args, str(script)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SlurmError(f"sbatch failed: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout.strip().split(";")[0]


def _int(text: str, name: str, default: int) -> int:
    if text in (None, ""):
        return default
    try:
        return int(text)
    except ValueError:
        raise SlurmError(f"{name} must be an integer, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pretrain.slurm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--size", default="")
    parser.add_argument("--nodes", default="", help="number of nodes (default 1)")
    parser.add_argument("--gpus-per-node", default="", help="GPUs per node; 0 = CPU profile (default 0)")
    parser.add_argument("--tasks-per-node", default="", help="training tasks per node (default: GPUs, or 1 on CPU)")
    parser.add_argument("--cpus-per-task", default="")
    parser.add_argument("--partition", default="")
    parser.add_argument("--time", default="", help="time limit, e.g. 24:00:00 or 2-00:00:00")
    parser.add_argument("--warn-seconds", default="", help="USR1 this long before the end (default 120)")
    parser.add_argument("--run", default="", help="run directory (default runs/MODEL)")
    parser.add_argument("--python", default="", help="python on the nodes (default: this interpreter)")
    parser.add_argument("--sbatch-option", action="append", default=[], metavar="--NAME=VALUE",
                        help="extra #SBATCH line, e.g. --sbatch-option=--account=nlp (repeatable)")
    parser.add_argument("--no-prepare", action="store_true",
                        help="skip the data stages in the job (data already prepared on the shared disk)")
    parser.add_argument("--dry-run", action="store_true", help="print the script instead of submitting")
    # `make slurm DRY_RUN=...`: a dry run unless the value is empty or 0.
    parser.add_argument("--dry-run-value", default="", help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="dotted key=value config overrides")
    args = parser.parse_args(argv)
    try:
        spec = JobSpec(model=args.model, size=args.size or "tiny", run_dir=args.run,
                       nodes=_int(args.nodes, "NODES", 1), gpus_per_node=_int(args.gpus_per_node, "GPUS_PER_NODE", 0),
                       tasks_per_node=_int(args.tasks_per_node, "TASKS_PER_NODE", 0),
                       cpus_per_task=_int(args.cpus_per_task, "CPUS_PER_TASK", 0),
                       warn_seconds=_int(args.warn_seconds, "WARN_SECONDS", 120),
                       partition=args.partition, time=args.time, python=args.python,
                       overrides=list(args.overrides), directives=list(args.sbatch_option),
                       prepare=not args.no_prepare)
        text = render(spec)
        if args.dry_run or args.dry_run_value not in ("", "0"):
            sys.stdout.write(text)
            return 0
        script = write_script(spec, text)
        job = submit(script)
    except SlurmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"submitted job {job}: {script} (log: {spec.run_dir}/slurm-{job}.out)", file=sys.stderr)
    print(job)
    return 0


if __name__ == "__main__":
    sys.exit(main())
