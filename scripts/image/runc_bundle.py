"""Runs a podman-built image under runc, as an OCI bundle: for machines where `podman run` cannot start containers.

`podman run` asks the kernel for resource limits (setrlimit) that sandboxes such as ours refuse; `runc run` on a
bundle whose spec sets no `rlimits` starts the same image with its own namespaces (mount, PID, IPC, UTS), a chosen
uid, the host's network and a read-only root with tmpfs and bind mounts, the way a kubelet with
`readOnlyRootFilesystem` and `hostNetwork` would. The image's filesystem is exported once per image id
(`podman create` + `podman export`) under image-work/bundles/; its config (env, user, entrypoint, workdir,
healthcheck) comes from `podman image inspect`.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tarfile
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / "image-work"
BUNDLES = WORK / "bundles"


@dataclass(frozen=True)
class ImageConfig:
    """What `podman image inspect` says the image runs, and as whom."""

    image_id: str
    env: dict[str, str]
    user: str
    entrypoint: list[str]
    cmd: list[str]
    workdir: str
    healthcheck: list[str]
    """The HEALTHCHECK's exec-form command (without the CMD marker); empty when the image has none."""
    size: int

    @classmethod
    def inspect(cls, image: str) -> ImageConfig:
        (data,) = json.loads(_podman("image", "inspect", image))
        config = data.get("Config") or {}
        test = (data.get("Healthcheck") or {}).get("Test") or []
        return cls(
            image_id=data["Id"],
            env=dict(item.split("=", 1) for item in config.get("Env") or []),
            user=config.get("User") or "0",
            entrypoint=list(config.get("Entrypoint") or []),
            cmd=list(config.get("Cmd") or []),
            workdir=config.get("WorkingDir") or "/",
            healthcheck=list(test[1:]) if test[:1] == ["CMD"] else [],
            size=int(data["Size"]),
        )


def _podman(*args: str) -> str:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=True).stdout


def exported_rootfs(config: ImageConfig) -> Path:
    """The image's filesystem as a directory, exported once per image id (a rebuilt image gets a new one)."""
    rootfs = BUNDLES / config.image_id[:12] / "rootfs"
    if (rootfs.parent / ".complete").exists():
        return rootfs
    shutil.rmtree(rootfs.parent, ignore_errors=True)
    rootfs.mkdir(parents=True)
    container = _podman("create", config.image_id).strip()
    try:
        with subprocess.Popen(["podman", "export", container], stdout=subprocess.PIPE) as export:
            assert export.stdout is not None
            with tarfile.open(fileobj=export.stdout, mode="r|") as archive:
                archive.extractall(rootfs, numeric_owner=True, filter="fully_trusted")  # modes as built (/tmp 1777)
    finally:
        _podman("rm", container)
    (rootfs.parent / ".complete").touch()
    # Short ids of the images that still have a tag.
    tagged = set(_podman("images", "--filter", "dangling=false", "--format", "{{.ID}}").split())
    for stale in BUNDLES.iterdir():  # a rebuilt image leaves its previous rootfs behind: hundreds of MB each
        if stale != rootfs.parent and stale.name not in tagged:
            shutil.rmtree(stale, ignore_errors=True)
    return rootfs


@dataclass
class Mount:
    """A bind mount (`source` on the host) or, without a source, a tmpfs, at `destination` in the container."""

    destination: str
    source: Path | None = None
    read_only: bool = False

    def spec(self) -> dict[str, Any]:
        if self.source is None:  # runc gives a tmpfs the mode of the directory it covers (the image's /tmp: 1777)
            options = ["nosuid", "nodev", "size=256m"]
            return {"destination": self.destination, "type": "tmpfs", "source": "tmpfs", "options": options}
        options = ["rbind", "ro" if self.read_only else "rw"]
        return {"destination": self.destination, "type": "bind", "source": str(self.source), "options": options}


@dataclass
class RuncContainer:
    """One `runc run` of an image: started in the foreground of a child process, stopped by signal, then deleted."""

    config: ImageConfig
    args: Sequence[str] = ()
    """Appended to the image's entrypoint (as `docker run IMAGE ARGS...`); the image's CMD when empty."""
    env: Mapping[str, str] = field(default_factory=dict)
    uid: int | None = None
    """The user to run as; the image's USER when None (gid is the same number, as in the Kubernetes manifests)."""
    mounts: Sequence[Mount] = ()
    read_only_root: bool = True
    name: str = field(default_factory=lambda: f"ortserve-test-{uuid.uuid4().hex[:8]}")
    process: subprocess.Popen[str] | None = None

    @property
    def bundle(self) -> Path:
        return BUNDLES / self.config.image_id[:12] / self.name

    def spec(self) -> dict[str, Any]:
        """The OCI runtime spec: runc's default one, with the image's process, no rlimits and the host network."""
        uid = self.uid if self.uid is not None else int(self.config.user.split(":")[0])
        spec = runc_default_spec()
        process = spec["process"]
        process["terminal"] = False
        process["user"] = {"uid": uid, "gid": uid}
        process["args"] = [*self.config.entrypoint, *(self.args or self.config.cmd)]
        process["env"] = [f"{key}={value}" for key, value in {**self.config.env, **self.env}.items()]
        process["cwd"] = self.config.workdir
        process.pop("rlimits", None)  # the sandbox refuses setrlimit; the runtime's defaults are inherited instead
        spec["root"] = {"path": str(exported_rootfs(self.config)), "readonly": self.read_only_root}
        spec["hostname"] = self.name
        linux = spec["linux"]
        linux["namespaces"] = [ns for ns in linux["namespaces"] if ns["type"] != "network"]  # host network
        spec["mounts"] = [*spec["mounts"], *(mount.spec() for mount in self.mounts)]
        return spec

    def start(self) -> RuncContainer:
        spec = self.spec()  # first: exporting the image's root filesystem (once per image) lays its folder anew
        self.bundle.mkdir(parents=True, exist_ok=True)
        (self.bundle / "config.json").write_text(json.dumps(spec, indent=1))
        self.process = subprocess.Popen(
            ["runc", "run", "--bundle", str(self.bundle), self.name],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        return self

    def exec(self, argv: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run `argv` inside the running container, as its user, with its environment."""
        return subprocess.run(
            ["runc", "exec", self.name, *argv], capture_output=True, text=True, timeout=timeout, check=False
        )

    def kill(self, sig: signal.Signals = signal.SIGTERM) -> None:
        subprocess.run(["runc", "kill", self.name, sig.name.removeprefix("SIG")], capture_output=True, check=False)

    def wait(self, timeout: float) -> tuple[int, str]:
        """The container's exit code and its output, once it exits."""
        assert self.process is not None
        output, _ = self.process.communicate(timeout=timeout)
        return self.process.returncode, output

    def remove(self) -> None:
        """Kill whatever still runs, delete the container and its bundle directory (the exported rootfs stays)."""
        if self.process is not None and self.process.poll() is None:
            self.kill(signal.SIGKILL)
            self.process.communicate(timeout=30)
        subprocess.run(["runc", "delete", "--force", self.name], capture_output=True, check=False)
        shutil.rmtree(self.bundle, ignore_errors=True)


def runc_default_spec() -> dict[str, Any]:
    """The spec `runc spec` writes (namespaces, masked paths, capabilities of an unprivileged container)."""
    with tempfile.TemporaryDirectory(prefix="ortserve-spec-") as scratch:
        subprocess.run(["runc", "spec", "--bundle", scratch], check=True)
        spec: dict[str, Any] = json.loads((Path(scratch) / "config.json").read_text())
        return spec
