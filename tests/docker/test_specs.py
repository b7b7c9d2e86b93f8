"""Containers and Kubernetes training jobs as data; the [build] settings. Pure and fast."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fnserve.docker.containers import (
    StoreAccess,
    data_access,
    local_user,
    parse_memory,
    serving_spec,
    store_access,
    training_spec,
)
from fnserve.images import BuildError
from fnserve.images.base import debootstrap_command, plan_base
from fnserve.k8s.jobs import TrainingJob, training_cronjob, training_job
from fnserve.project import ProjectSettings

# --- settings -------------------------------------------------------------------------------------


def settings(
    config: dict | None = None, env: dict | None = None, flags: dict | None = None
) -> ProjectSettings:
    return ProjectSettings.from_mapping(Path("/project"), config or {}, env or {}, flags or {})


def test_build_settings_precedence_flag_env_toml_default() -> None:
    assert settings().registry == "" and settings().base_image == "fnserve/base:bookworm"
    toml = {"build": {"registry": "reg.example:5000/team/", "base_image": "local/base:1"}}
    assert settings(toml).registry == "reg.example:5000/team"  # a trailing slash is dropped
    assert settings(toml, {"FNSERVE_REGISTRY": "env.example"}).registry == "env.example"
    flags = {"registry": "flag.example", "base_image": "mine/base:2"}
    chosen = settings(toml, {"FNSERVE_REGISTRY": "env.example"}, flags)
    assert (chosen.registry, chosen.base_image) == ("flag.example", "mine/base:2")
    assert settings({"build": {"debian_mirror": "http://mirror.internal/debian"}}).debian_mirror == (
        "http://mirror.internal/debian"
    )


@pytest.mark.parametrize(
    ("config", "env", "message"),
    [
        ({"build": {"registry": "https://reg.example"}}, {}, "setting registry .* without a scheme"),
        ({"build": {"registry": ["reg.example"]}}, {}, "setting registry .* must be str"),
        ({}, {"FNSERVE_BASE_IMAGE": "Not An Image"}, "setting base_image .* not an image reference"),
        ({"build": {"debian_mirror": "ftp://x"}}, {}, "setting debian_mirror"),
        ({"build": "registry"}, {}, r"\[build\] must be a table"),
        ({}, {"FNSERVE_STORE_OPTIONS": "{not json"}, "store_options .*FNSERVE_STORE_OPTIONS.* not JSON"),
        ({}, {"FNSERVE_STORE_OPTIONS": "[1]"}, "must be a JSON object"),
    ],
)
def test_bad_build_settings_name_the_key(config: dict, env: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings(config, env)


def test_store_options_from_environment_win_over_fn_toml() -> None:
    toml = {"store": {"options": {"anon": True}}}
    assert settings(toml).storage_options == {"anon": True}
    env = {"FNSERVE_STORE_OPTIONS": '{"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}'}
    assert settings(toml, env).storage_options == {"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}


# --- containers -----------------------------------------------------------------------------------


def test_file_store_is_mounted(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with pytest.raises(BuildError, match="does not exist: train the function first"):
        store_access(store.as_uri(), {}, {}, writable=False)
    writable = store_access(store.as_uri(), {}, {}, writable=True)
    assert store.is_dir() and writable.mounts == {str(store): ("/fnserve/store", "rw")}
    assert writable.environment == {"FNSERVE_STORE": "file:///fnserve/store"}
    assert store_access(store.as_uri(), {}, {}, writable=False).mounts[str(store)][1] == "ro"
    assert local_user(writable) is not None and local_user(StoreAccess()) is None
    with pytest.raises(BuildError, match="memory: a container cannot reach it"):
        store_access("memory://models", {}, {}, writable=False)


def test_remote_store_gets_options_and_credentials_at_run_time() -> None:
    options = {"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}
    environ = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "HOME": "/root", "PATH": "/bin"}
    access = store_access("s3://bucket/ckpt", options, environ, writable=True)
    assert access.environment == {
        "FNSERVE_STORE": "s3://bucket/ckpt",
        "FNSERVE_STORE_OPTIONS": json.dumps(options, sort_keys=True),
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
    }
    assert access.loopback and not access.mounts
    remote = store_access(
        "s3://b", {"client_kwargs": {"endpoint_url": "https://s3.example"}}, {}, writable=False
    )
    assert not remote.loopback
    assert store_access("s3://b", {}, {"AWS_ENDPOINT_URL": "http://localhost:9000"}, writable=False).loopback


def test_data_access(tmp_path: Path) -> None:
    data = tmp_path / "bookings.parquet"
    with pytest.raises(BuildError, match=r"training data .* does not exist"):
        data_access(str(data), {})
    data.write_bytes(b"PAR1")
    local = data_access(data.as_uri(), {})
    assert local.environment == {"FNSERVE_DATA": "file:///fnserve/data/bookings.parquet"}
    assert local.mounts == {str(data): ("/fnserve/data/bookings.parquet", "ro")}
    assert data_access("s3://b/data/", {}).environment == {"FNSERVE_DATA": "s3://b/data/"}
    assert data_access(None, {}) == StoreAccess()


def test_a_database_gets_its_credential_variables_and_a_loopback_one_the_hosts_network() -> None:
    env = {
        "PGUSER": "trainer",
        "PGPASSWORD": "pw-1",
        "MYSQL_PWD": "pw-2",
        "AWS_SECRET_ACCESS_KEY": "s",
        "HOME": "/",
    }
    remote = data_access("postgresql://db.internal/shop?table=bookings", env)
    assert remote.environment == {
        "FNSERVE_DATA": "postgresql://db.internal/shop?table=bookings",
        "PGUSER": "trainer",
        "PGPASSWORD": "pw-1",
    }
    assert not remote.loopback and not remote.mounts
    local = data_access("mysql://trainer@127.0.0.1:3306/shop?table=bookings", env)
    assert local.environment == {
        "FNSERVE_DATA": "mysql://trainer@127.0.0.1:3306/shop?table=bookings",
        "MYSQL_PWD": "pw-2",
    }
    assert local.loopback


def test_serving_spec_read_only_with_tmpfs_and_published_port() -> None:
    access = StoreAccess({"FNSERVE_STORE": "s3://b"})
    spec = serving_spec("fnserve/recs:abc", "recs", access, port=0)
    assert spec.read_only and "/tmp" in spec.tmpfs and spec.ports == {8080: ("127.0.0.1", 0)}
    assert spec.environment == {"FNSERVE_STORE": "s3://b"} and spec.entrypoint is None
    host = serving_spec("fnserve/recs:abc", "recs", access, port=9123, network="host")
    assert host.ports == {} and host.environment["FNSERVE_PORT"] == "9123"
    with pytest.raises(BuildError, match="port must be given"):
        serving_spec("fnserve/recs:abc", "recs", access, network="host")


def test_training_spec_runs_train_py_with_limits() -> None:
    store = StoreAccess({"FNSERVE_STORE": "file:///fnserve/store"}, {"/s": ("/fnserve/store", "rw")})
    data = StoreAccess({"FNSERVE_DATA": "file:///fnserve/data/d"}, {"/d": ("/fnserve/data/d", "ro")})
    spec = training_spec("img", "recs", store, data, cpus=1.5, memory_bytes=2**31, user="1000:1000")
    assert spec.entrypoint == ["python", "/srv/functions/recs/train.py"]
    assert spec.environment["FNSERVE_FUNCTION"] == "recs" and spec.environment["FNSERVE_DATA"]
    assert spec.mounts == {"/s": ("/fnserve/store", "rw"), "/d": ("/fnserve/data/d", "ro")}
    assert (spec.cpus, spec.memory_bytes, spec.read_only, spec.user) == (1.5, 2**31, True, "1000:1000")
    assert spec.labels["io.fnserve.role"] == "train"


@pytest.mark.parametrize(
    ("text", "size"), [("2g", 2 * 2**30), ("512m", 512 * 2**20), ("2Gi", 2 * 2**30), ("1.5G", 3 * 2**29)]
)
def test_parse_memory(text: str, size: int) -> None:
    assert parse_memory(text) == size


@pytest.mark.parametrize("text", ["lots", "2x", "1k"])
def test_parse_memory_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="memory"):
        parse_memory(text)


def test_base_image_plan() -> None:
    plan = plan_base("fnserve/base:bookworm", "http://mirror.internal/debian")
    assert debootstrap_command(plan, "/var/tmp/r") == [
        "debootstrap",
        "--variant=minbase",
        "--include=python3,python3-venv,ca-certificates",
        "bookworm",
        "/var/tmp/r",
        "http://mirror.internal/debian",
    ]
    assert "ENV LANG=C.UTF-8" in plan.changes


# --- Kubernetes training jobs -----------------------------------------------------------------------


JOB = TrainingJob(
    function="recs",
    image="registry.example/fnserve/recs:3f2a9c1b7d0e",
    store="s3://models/ckpt",
    data="s3://data/bookings/",
    store_options={"client_kwargs": {"endpoint_url": "https://s3.internal"}},
    secret="s3-credentials",
    cpus=2,
    memory_bytes=4 * 2**30,
    namespace="ml",
    suffix="3f2a9c1b7d0e",
)


def test_training_job_manifest() -> None:
    job = training_job(JOB)
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job")
    assert job["metadata"]["name"] == "fnserve-train-recs-3f2a9c1b7d0e"
    assert job["metadata"]["namespace"] == "ml"
    assert job["metadata"]["labels"]["app.kubernetes.io/component"] == "training"
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never" and pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["image"] == JOB.image and container["command"] == [
        "python",
        "/srv/functions/recs/train.py",
    ]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {
        "FNSERVE_FUNCTION": "recs",
        "FNSERVE_PROJECT": "/srv",
        "FNSERVE_STORE": "s3://models/ckpt",
        "FNSERVE_STORE_OPTIONS": '{"client_kwargs": {"endpoint_url": "https://s3.internal"}}',
        "FNSERVE_DATA": "s3://data/bookings/",
    }
    assert container["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    assert container["resources"] == {
        "requests": {"cpu": "2000m", "memory": "4096Mi"},
        "limits": {"cpu": "2000m", "memory": "4096Mi"},
    }
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert job["spec"]["backoffLimit"] == 1 and job["spec"]["ttlSecondsAfterFinished"] > 0


def test_training_cronjob_manifest() -> None:
    cron = training_cronjob(JOB, schedule="0 3 * * *")
    assert cron["kind"] == "CronJob" and cron["spec"]["schedule"] == "0 3 * * *"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["metadata"]["name"] == "fnserve-train-recs"
    assert cron["spec"]["jobTemplate"]["spec"] == training_job(JOB)["spec"]
    assert training_cronjob(JOB, schedule="@daily")["spec"]["schedule"] == "@daily"
    for bad in ("every day", "0 3 * *", "@sometimes"):
        with pytest.raises(ValueError, match="schedule"):
            training_cronjob(JOB, schedule=bad)


def test_training_job_reads_a_database_with_credentials_from_the_secret() -> None:
    job = TrainingJob("recs", "img", "s3://m", data="postgresql://db.ml.svc/shop?table=bookings", secret="db")
    (container,) = training_job(job)["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["FNSERVE_DATA"] == "postgresql://db.ml.svc/shop?table=bookings" and "PGPASSWORD" not in env
    assert container["envFrom"] == [{"secretRef": {"name": "db"}}]
    with pytest.raises(
        ValueError, match=r"postgresql://\*\*\*@db.ml.svc/shop\?table=t has a password in its URL"
    ) as caught:
        training_job(
            TrainingJob("recs", "img", "s3://m", data="postgresql://u:hunter22@db.ml.svc/shop?table=t")
        )
    assert "hunter22" not in str(caught.value) and "PGUSER and PGPASSWORD in the Secret" in str(caught.value)
    with pytest.raises(ValueError, match="MYSQL_PWD in the Secret"):
        training_cronjob(
            TrainingJob("recs", "img", "s3://m", data="mysql://u:pw@db/shop?table=t"), schedule="@daily"
        )
    with pytest.raises(ValueError, match=r"postgresql://localhost/shop\?table=t is on this machine"):
        training_job(TrainingJob("recs", "img", "s3://m", data="postgresql://localhost/shop?table=t"))
    with pytest.raises(ValueError, match="name what to read"):
        training_job(TrainingJob("recs", "img", "s3://m", data="postgresql://db/shop"))


def test_training_job_needs_shared_storage_and_short_names() -> None:
    with pytest.raises(ValueError, match=r"store file:///x is on this machine"):
        training_job(TrainingJob("recs", "img", "file:///x"))
    with pytest.raises(ValueError, match="data /data/x is on this machine"):
        training_job(TrainingJob("recs", "img", "s3://m", data="/data/x"))
    minimal = training_job(TrainingJob("a" * 63, "img", "s3://m", suffix="0123456789ab"))
    assert len(minimal["metadata"]["name"]) <= 63 and minimal["metadata"]["name"].endswith("-0123456789ab")
    container = minimal["spec"]["template"]["spec"]["containers"][0]
    assert "resources" not in container and "envFrom" not in container
