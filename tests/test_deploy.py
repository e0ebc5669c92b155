"""deploy/: the Kubernetes manifests against the Kubernetes API schema, the Slurm scripts' shape.

The manifests are validated with the official `kubernetes` Python client's models (pydantic models of the
API schema that forbid unknown fields and check types), then read for what the issue asks: an Indexed Job,
the same image with its entrypoint switched to `panther-ensemble predict`, a GPU, input and output
volumes, and arguments that the real `predict` parser accepts with a shard count equal to `completions`.
"""

from __future__ import annotations

import copy
import shutil
import subprocess

import pytest
import yaml

from conftest import REPO

KUBE = REPO / "deploy" / "kubernetes"
SLURM = REPO / "deploy" / "slurm"


def load(name: str) -> dict:
    docs = list(yaml.safe_load_all((KUBE / name).read_text()))
    assert len(docs) == 1
    return docs[0]


def validated_job(doc: dict):
    from kubernetes.client.models import V1Job

    return V1Job.model_validate(doc)


def predict_args(container) -> "argparse.Namespace":  # noqa: F821
    from panther_ensemble.cli import build_parser

    assert container.command == ["panther-ensemble", "predict"]
    return build_parser("predict").parse_args(["predict", *container.args])


def mounts(container, pod) -> dict[str, tuple[str, bool, object]]:
    volumes = {v.name: v for v in pod.volumes}
    return {m.mount_path: (m.name, bool(m.read_only), volumes[m.name]) for m in container.volume_mounts}


def test_indexed_job_is_valid_and_shards_the_cohort_on_gpus():
    job = validated_job(load("indexed-job.yaml"))
    assert job.api_version == "batch/v1" and job.kind == "Job"
    spec = job.spec
    assert spec.completion_mode == "Indexed" and spec.completions >= 1
    assert spec.template.spec.restart_policy == "Never" and spec.backoff_limit_per_index is not None
    [container] = spec.template.spec.containers
    args = predict_args(container)
    assert args.shard == f"/{spec.completions}"  # the index comes from JOB_COMPLETION_INDEX
    for what in (container.resources.requests, container.resources.limits):
        assert what["nvidia.com/gpu"] == "1"
    assert args.device in ("cuda", "auto")
    paths = mounts(container, spec.template.spec)
    inputs = [str(i) for i in args.images]
    assert all(any(i.startswith(p) for p, (_, ro, _) in paths.items() if ro) for i in inputs)  # read-only input
    output_mount = next(p for p in paths if str(args.output).startswith(p))
    name, read_only, volume = paths[output_mount]
    assert not read_only and volume.persistent_volume_claim is not None
    assert paths["/tmp"][2].empty_dir is not None  # the image keeps caches in /tmp; the root fs is read-only
    assert container.security_context.read_only_root_filesystem


def test_merge_job_is_valid_and_merges_the_same_output():
    job = validated_job(load("merge-job.yaml"))
    predict = validated_job(load("indexed-job.yaml"))
    [container] = job.spec.template.spec.containers
    args = predict_args(container)
    assert args.summary_only and args.shard is None
    pargs = predict_args(predict.spec.template.spec.containers[0])
    assert (args.images, args.output, args.preview) == (pargs.images, pargs.output, pargs.preview)
    assert "nvidia.com/gpu" not in (container.resources.limits or {})
    assert container.image == predict.spec.template.spec.containers[0].image


@pytest.mark.parametrize("break_it", ["unknown field", "wrong type", "misplaced field"])
def test_the_schema_check_catches_mistakes(break_it):
    from pydantic import ValidationError

    doc = copy.deepcopy(load("indexed-job.yaml"))
    container = doc["spec"]["template"]["spec"]["containers"][0]
    if break_it == "unknown field":
        container["volumeMount"] = container.pop("volumeMounts")
    elif break_it == "wrong type":
        doc["spec"]["completions"] = "eight"
    else:
        doc["spec"]["restartPolicy"] = "Never"
    with pytest.raises(ValidationError):
        validated_job(doc)


def test_slurm_scripts_parse_and_pass_shards_through():
    for script in (*SLURM.glob("*.sbatch"), *SLURM.glob("*.sh")):
        subprocess.run(["bash", "-n", script], check=True)
        if shutil.which("shellcheck"):
            subprocess.run(["shellcheck", script], check=True)
    text = (SLURM / "panther-predict.sbatch").read_text()
    assert "#SBATCH --gres=gpu:1" in text and '--shard "/${shards}"' in text
    # without a job array the script refuses to run (it would otherwise predict with no shard index)
    proc = subprocess.run(["bash", SLURM / "panther-predict.sbatch", "3", "/tmp/out", "x.mha"], capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode != 0 and "job array" in proc.stderr
