"""The sandbox llama-server runs in: bubblewrap on Linux, a sandbox-exec profile on macOS.

On Linux llama-server sees a read-only /usr, its own binary, the model files and its socket
directory; nothing else of the host (no $HOME, no /etc beyond the loader cache), no network
namespace of the host (it serves over the bound Unix socket), an empty environment and a private
/tmp. DMR sandboxes only on macOS; its profile is reproduced, narrowed to our paths.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from modelrunner.core.errors import RunnerFailed

log = logging.getLogger(__name__)

SANDBOX_ENV = "MODELRUNNER_SANDBOX"
"""1 forces the sandbox (failing loudly if it cannot work), 0 turns it off; unset = automatic."""

SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
"""Host directories mounted read-only, or re-created as the symlinks they are (/lib -> usr/lib)."""

SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf")
"""The dynamic loader's cache: the only files of /etc llama-server gets."""

GPU_DEVICES = ("/dev/dri", "/dev/kfd", "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")
"""Device nodes a GPU build needs, passed through when the host has them (plus /dev/nvidia<N>)."""

PASSED_ENV_PREFIXES = ("CUDA_", "HIP_", "ROCR_", "HSA_", "GGML_", "GPU_", "OMP_", "VK_")
"""Host variables that select or tune devices; every other variable is cleared."""

SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"

DARWIN_PRIVATE_DIRS = ("/Applications", "/private/etc", "/Library", "/Users", "/Volumes")
"""Where macOS keeps user and system data: unreadable unless re-allowed (as DMR)."""


@dataclass(frozen=True, slots=True)
class SandboxPaths:
    """What a sandboxed llama-server may touch, besides the system directories."""

    binary: Path
    """The llama-server executable; its directory (and a sibling lib/) is mounted read-only."""
    read_only: tuple[Path, ...] = ()
    """Model directories (bundle files are hard links, so the directory is enough)."""
    writable: tuple[Path, ...] = ()
    """The runner's private runtime directory, where its socket lives."""


def parse_switch(environ: Mapping[str, str] | None = None) -> bool | None:
    """MODELRUNNER_SANDBOX as True (required), False (off) or None (automatic)."""
    raw = (os.environ if environ is None else environ).get(SANDBOX_ENV, "").strip().lower()
    if raw in ("", "auto"):
        return None
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise RunnerFailed(f"{SANDBOX_ENV} must be 1, 0 or auto, not {raw!r}")


@functools.cache
def bwrap_works(bwrap: str) -> bool:
    """Whether `bwrap` can create the namespaces we use here (probed once per binary)."""
    probe = [bwrap, "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent", "true"]
    try:
        result = subprocess.run(probe, capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        log.info("bubblewrap is not usable: %s", error)
        return False
    if result.returncode != 0:
        log.info("bubblewrap is not usable: %s", result.stderr.decode(errors="replace").strip())
    return result.returncode == 0


def find_bwrap() -> Path | None:
    """bubblewrap, if it is installed and works on this machine."""
    found = shutil.which("bwrap")
    return Path(found) if found is not None and bwrap_works(found) else None


def sandbox_tool(enabled: bool | None = None) -> Path | None:
    """The program to wrap llama-server with (bwrap or sandbox-exec), or None to run it bare.

    Args:
        enabled: True requires a sandbox, False turns it off, None reads MODELRUNNER_SANDBOX
            and, when that is unset too, sandboxes whenever it works.

    Raises:
        RunnerFailed: A sandbox is required but none works on this machine.
    """
    wanted = parse_switch() if enabled is None else enabled
    if wanted is False:
        return None
    if sys.platform == "linux":
        tool = find_bwrap()
    elif sys.platform == "darwin":
        found = shutil.which("sandbox-exec")
        tool = Path(found) if found else None
    else:
        tool = None
    if tool is None and wanted:
        raise RunnerFailed(
            "the llama-server sandbox is required but not available: install bubblewrap "
            f"(Debian: apt-get install bubblewrap) or set {SANDBOX_ENV}=0"
        )
    return tool


def sandboxed_argv(tool: Path, argv: Sequence[str], paths: SandboxPaths) -> list[str]:
    """`argv` wrapped by `tool`: bwrap's command line on Linux, sandbox-exec's on macOS."""
    if tool.name == "sandbox-exec":
        return [str(tool), "-p", darwin_profile(paths), *argv]
    return bwrap_argv(tool, argv, paths)


def bwrap_argv(
    bwrap: Path, argv: Sequence[str], paths: SandboxPaths, environ: Mapping[str, str] | None = None
) -> list[str]:
    """bubblewrap's command line confining `argv` to `paths`.

    `--tmpfs /tmp` comes first: a later tmpfs would hide the runtime directory bound below it.
    There is no `--new-session`: the child already has no terminal (its own session, stdin from
    /dev/null), and a new session would put llama-server out of reach of the process-group
    SIGTERM that stops it gracefully.
    """
    command = [str(bwrap), "--tmpfs", "/tmp"]
    for name in SYSTEM_DIRS:
        host = Path(name)
        if host.is_symlink():
            command += ["--symlink", os.readlink(host), name]
        elif host.is_dir():
            command += ["--ro-bind", name, name]
    for name in SYSTEM_FILES:
        command += ["--ro-bind-try", name, name]
    for directory in _unique(_binary_dirs(paths.binary)):
        command += ["--ro-bind", directory, directory]
    for directory in _unique(str(path) for path in paths.read_only):
        command += ["--ro-bind", directory, directory]
    for directory in _unique(str(path) for path in paths.writable):
        command += ["--bind", directory, directory]
    command += ["--dev", "/dev", "--proc", "/proc"]
    for device in _gpu_devices():
        command += ["--dev-bind", device, device]
    command += ["--unshare-all", "--die-with-parent", "--clearenv"]
    for name, value in sandbox_environment(environ).items():
        command += ["--setenv", name, value]
    command += ["--chdir", "/tmp", "--", *argv]
    return command


def sandbox_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The whole environment llama-server gets inside the sandbox.

    LLAMA_ARG_* variables are dropped on purpose: llama-server reads them as flags, and they
    would bypass the runtime-flag allowlist.
    """
    source = os.environ if environ is None else environ
    kept = {k: v for k, v in source.items() if k.startswith(PASSED_ENV_PREFIXES)}
    return {"PATH": SANDBOX_PATH, "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8", **kept}


def _binary_dirs(binary: Path) -> list[str]:
    """The binary's directory and the sibling lib/ a relocatable llama.cpp build loads from."""
    real = binary.resolve()
    dirs = [str(binary.parent), str(real.parent)]
    lib = real.parent.parent / "lib"
    if lib.is_dir():
        dirs.append(str(lib))
    return dirs


def _gpu_devices() -> list[str]:
    dev = Path("/dev")
    found = [name for name in GPU_DEVICES if Path(name).exists()]
    found += sorted(str(p) for p in dev.glob("nvidia[0-9]*"))
    return found


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _sbpl_string(value: Path | str) -> str:
    """A string literal for a sandbox profile."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _rule(head: str, filters: Iterable[str]) -> str:
    """One profile rule, one filter per line; "" when there is nothing to allow."""
    lines = list(filters)
    return f"({head}\n" + "\n".join(f"    {line}" for line in lines) + ")" if lines else ""


def _subpaths(paths: Iterable[Path | str]) -> list[str]:
    # The kernel matches resolved paths: /var/folders/... is /private/var/folders/... there.
    return [f"(subpath {_sbpl_string(p)})" for p in _unique(str(Path(p).resolve()) for p in paths)]


def darwin_profile(paths: SandboxPaths) -> str:
    """A sandbox-exec profile like DMR's llama.cpp one, narrowed to this runner's paths.

    As DMR: allow by default, deny the network except binding the runner's socket, devices,
    NVRAM, system calls for privileges, job creation, launchservicesd (no escape through open(1)),
    JIT, preferences and every file write; deny reads of user and system data. Narrower than
    DMR: writes only to the runtime directory (DMR allows all of /private/var and its cwd), reads
    of the home directory only for the model and binary directories.
    """
    code = _subpaths(_binary_dirs(paths.binary))
    models = _subpaths(paths.read_only)
    runtime = _subpaths(paths.writable)
    sections = [
        "(version 1)",
        ";;; Allow by default (dyld and Metal need too much to list) and deny what matters.",
        "(allow default)",
        ";;; No network: only the runner's own Unix socket.",
        "(deny network*)",
        _rule("allow network-bind network-inbound", runtime),
        "(deny device*)",
        "(deny nvram*)",
        "(deny system*)",
        "(deny job-creation)",
        ";;; open(1) would ask launchd to start a process outside the sandbox (ZDI-CAN-29308).",
        _rule(
            "deny mach-lookup",
            [
                '(global-name "com.apple.launchservicesd")',
                '(global-name "com.apple.coreservices.launchservicesd")',
            ],
        ),
        "(deny dynamic-code-generation)",
        "(deny user-preference*)",
        "(deny file-map-executable)",
        "(deny file-write*)",
        _rule(
            "deny file-read*",
            [f"(subpath {_sbpl_string(d)})" for d in DARWIN_PRIVATE_DIRS],
        ),
        _rule(
            "allow file-read* file-map-executable",
            ['(subpath "/usr")', '(subpath "/System")', *code],
        ),
        _rule("allow file-write*", ['(literal "/dev/null")', *runtime]),
        _rule("allow file-read*", [*models, *runtime]),
    ]
    return "\n".join(section for section in sections if section) + "\n"
