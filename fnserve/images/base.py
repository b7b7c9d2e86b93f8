"""The base image, made offline: a Debian root file system from debootstrap, imported.

No registry is reachable from these machines (and air-gapped build hosts have none either), so
function images never start FROM a pulled image: ``fn base-image`` bootstraps Debian bookworm
(minbase plus python3, python3-venv and ca-certificates) from a Debian mirror, removes what an
image does not need, and ``docker import``s it as ``fnserve/base:bookworm``. Debian bookworm's
python3 is 3.11, the Python fnserve is developed on.

>>> plan = plan_base("fnserve/base:bookworm", "http://deb.debian.org/debian")
>>> debootstrap_command(plan, "/var/tmp/rootfs")[:3]
['debootstrap', '--variant=minbase', '--include=python3,python3-venv,ca-certificates']
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fnserve import __version__
from fnserve.docker_engine import DockerEngine
from fnserve.images import BuildError
from fnserve.images.labels import FNSERVE_VERSION_LABEL

SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv", "ca-certificates")
# Removed from the root file system before import: caches, docs, host-specific files.
TRIM = (
    "var/cache/apt/archives/*.deb",
    "var/cache/apt/*.bin",
    "var/lib/apt/lists/*",
    "var/log/*",
    "usr/share/doc/*",
    "usr/share/man/*",
    "usr/share/info/*",
    "usr/share/locale/*",
    "etc/hostname",
    "etc/resolv.conf",
    "dev/*",
)


@dataclass(frozen=True)
class BasePlan:
    image: str  # the reference the base is imported as
    mirror: str  # Debian mirror URL
    suite: str = SUITE
    packages: tuple[str, ...] = PACKAGES
    changes: tuple[str, ...] = ()  # Dockerfile instructions applied at import (ENV, LABEL, CMD)


def plan_base(image: str, mirror: str) -> BasePlan:
    return BasePlan(
        image=image,
        mirror=mirror,
        changes=(
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENV LANG=C.UTF-8",
            f"LABEL org.opencontainers.image.title=fnserve-base org.opencontainers.image.version={SUITE} "
            f"{FNSERVE_VERSION_LABEL}={__version__}",
            'CMD ["python3"]',
        ),
    )


def debootstrap_command(plan: BasePlan, target: str) -> list[str]:
    return [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(plan.packages)}",
        plan.suite,
        target,
        plan.mirror,
    ]


def create_base_image(plan: BasePlan, engine: DockerEngine, on_output: Callable[[str], None]) -> str:
    """debootstrap, trim, tar, import; returns the image id. Needs root and debootstrap."""
    if shutil.which("debootstrap") is None:
        raise BuildError(
            "debootstrap is not installed: apt-get install -y debootstrap (or run scripts/ensure-docker)"
        )
    if os.geteuid() != 0:
        raise BuildError("making the base image needs root (debootstrap creates device files and owners)")
    # /var/tmp: on disk and not noexec (debootstrap runs programs inside the new root).
    with tempfile.TemporaryDirectory(prefix="fnserve-base-", dir="/var/tmp") as work:
        rootfs, tar_path = Path(work) / "rootfs", Path(work) / "rootfs.tar"
        _run(debootstrap_command(plan, str(rootfs)), on_output, "debootstrap")
        for pattern in TRIM:
            for path in glob.glob(str(rootfs / pattern)):
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.remove(path)
        _run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(tar_path), "."], on_output, "tar")
        on_output(f"importing {tar_path.stat().st_size / 2**20:.0f} MiB root file system as {plan.image}")
        return engine.import_rootfs(str(tar_path), plan.image, list(plan.changes))


def _run(command: list[str], on_output: Callable[[str], None], what: str) -> None:
    tail: list[str] = []
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            line = line.rstrip()
            tail = [*tail[-30:], line]
            on_output(line)
    if process.returncode != 0:
        log = "\n".join(f"  | {line}" for line in tail)
        raise BuildError(f"{what} failed (exit code {process.returncode}):\n{log}")
