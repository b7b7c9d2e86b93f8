"""The build context: which files go to the engine, under which names, as a reproducible tar.

Files are chosen here, not by the engine: every path is checked to be a plain relative path
inside the context, every source to lie inside the folder it was taken from (a symlink out of a
function's folder is an error naming it), and ``.dockerignore`` rules (ours, then the function's
own) keep version control, caches, local state and credential files out. The same rules are
shipped in the context as ``.dockerignore``.

>>> is_ignored("function/.aws/credentials", parse_ignore(DEFAULT_IGNORE))
True
>>> is_ignored("function/predict.py", parse_ignore(DEFAULT_IGNORE))
False
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from fnserve.images import BuildError

# Applied to every context (paths relative to the context root, Docker's .dockerignore syntax).
DEFAULT_IGNORE = """\
# fnserve never sends these to the engine: version control, caches, local state, secrets.
**/.git
**/.hg
**/.svn
**/__pycache__
**/*.py[cod]
**/.ipynb_checkpoints
**/.pytest_cache
**/.mypy_cache
**/.ruff_cache
**/.venv
**/venv
**/.fnserve
**/.DS_Store
**/.env
**/.env.*
**/.aws
**/.ssh
**/.gnupg
**/.docker
**/.kube
**/.netrc
**/.pypirc
**/.git-credentials
**/*.pem
**/*.key
**/*.p12
**/id_rsa*
**/id_ed25519*
**/credentials
**/credentials.*
**/secrets
**/secrets.*
"""


@dataclass(frozen=True)
class ContextFile:
    path: str  # '/'-separated, relative to the context root
    source: Path | bytes  # a file on this machine, or generated content
    executable: bool = False

    def content(self) -> bytes:
        return self.source if isinstance(self.source, bytes) else self.source.read_bytes()


@dataclass(frozen=True)
class IgnoreRule:
    pattern: re.Pattern[str]
    negated: bool  # "!pattern" re-includes what an earlier rule excluded
    text: str


def parse_ignore(text: str) -> list[IgnoreRule]:
    """Rules of a ``.dockerignore`` file, in order (the last matching rule decides)."""
    rules = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line[1:].strip() if negated else line).lstrip("/")
        pattern = pattern.removeprefix("./")
        rules.append(IgnoreRule(re.compile(_glob_regex(pattern)), negated, line))
    return rules


def is_ignored(path: str, rules: Sequence[IgnoreRule]) -> bool:
    """Whether ``path`` or a folder above it matches the rules (Docker's semantics)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for rule in rules:
        if any(rule.pattern.fullmatch(p) for p in prefixes):
            ignored = not rule.negated
    return ignored


def folder_files(folder: Path, prefix: str, rules: Sequence[IgnoreRule]) -> list[ContextFile]:
    """The files under ``folder`` as context files under ``prefix``, minus ignored ones.

    A symlink is followed only if it stays inside ``folder``; one pointing elsewhere is an
    error, so nothing outside the function's folder reaches the image by accident.
    """
    root = folder.resolve()
    # An ignored folder is skipped whole unless a "!" rule may re-include something inside it.
    prune = not any(rule.negated for rule in rules)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for name in sorted(dirnames + filenames):
            path = here / name
            rel = f"{prefix}/{path.relative_to(root).as_posix()}"
            if is_ignored(rel, rules):
                if name in dirnames and prune:
                    dirnames.remove(name)
                continue
            if path.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(root):
                    raise BuildError(f"{path} links to {target}, outside {folder}: copy the file in instead")
                if target.is_dir():
                    continue  # its files are in the folder already, under their real path
            if path.is_file():
                found.append(ContextFile(check_member(rel), path, executable=os.access(path, os.X_OK)))
    return found


def check_member(path: str) -> str:
    """A context path must be relative, normalized and free of '..' (no escaping the context)."""
    pure = PurePosixPath(path)
    if pure.is_absolute() or not pure.parts or any(part in ("", ".", "..") for part in path.split("/")):
        raise BuildError(f"{path!r} is not a path inside the build context")
    return path


def context_digest(files: Iterable[ContextFile], *extra: str) -> str:
    """sha256 over every file's name, mode and content, plus ``extra`` inputs (e.g. the base image id)."""
    digest = hashlib.sha256()
    for item in sorted(files, key=lambda f: f.path):
        content = hashlib.sha256(item.content()).hexdigest()
        digest.update(f"{item.path}\0{int(item.executable)}\0{content}\n".encode())
    for value in extra:
        digest.update(f"extra\0{value}\n".encode())
    return digest.hexdigest()


def write_tar(files: Iterable[ContextFile]) -> IO[bytes]:
    """A tar of the context, rewound: same files, same bytes (no times, owners or host paths)."""
    stream: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024)  # noqa: SIM115
    with tarfile.open(fileobj=stream, mode="w", format=tarfile.PAX_FORMAT) as tar:
        seen_dirs: set[str] = set()
        for item in sorted(files, key=lambda f: f.path):
            parents = PurePosixPath(item.path).parents
            for parent in reversed(list(parents)[:-1]):
                if str(parent) not in seen_dirs:
                    seen_dirs.add(str(parent))
                    tar.addfile(_tar_info(str(parent), tarfile.DIRTYPE, 0o755))
            data = item.content()
            info = _tar_info(item.path, tarfile.REGTYPE, 0o755 if item.executable else 0o644)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    stream.seek(0)
    return stream


def _tar_info(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime = kind, mode, 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _glob_regex(pattern: str) -> str:
    """Docker's ignore globs: ``**`` spans folders, ``*`` and ``?`` stay within one name."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.find("]", i)
            if end == -1:
                out.append(re.escape(pattern[i]))
                i += 1
            else:
                out.append(pattern[i : end + 1].replace("[!", "[^"))
                i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)
