"""Runtime flags `_configure` may pass to llama-server: DMR's allowlist and its safety rules.

Only flags named here are accepted; none of them takes a path, and no argument may contain `/`
or `\\`, so a client cannot make llama-server read or write files of its choosing (log files, LoRA
adapters, slot dumps, templates, TLS keys). Rejections are InvalidInput (400) naming the flag.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Sequence

from modelrunner.core.errors import InvalidInput

LLAMA_CPP = "llama.cpp"


def _flags(*groups: str) -> frozenset[str]:
    return frozenset(flag for group in groups for flag in group.split())


LLAMA_CPP_FLAGS = _flags(
    # threads and CPU placement
    "-t --threads -tb --threads-batch -C --cpu-mask -Cr --cpu-range --cpu-strict --prio --poll",
    "-Cb --cpu-mask-batch -Crb --cpu-range-batch --cpu-strict-batch --prio-batch --poll-batch",
    # context and prediction
    "-c --ctx-size -n --predict --n-predict --keep",
    # batching
    "-b --batch-size -ub --ubatch-size --swa-full -fa --flash-attn --perf --no-perf",
    # sampling
    "--samplers -s --seed --temp --temperature --top-k --top-p --min-p --top-nsigma",
    "--xtc-probability --xtc-threshold --typical --repeat-last-n --repeat-penalty",
    "--presence-penalty --frequency-penalty --dry-multiplier --dry-base --dry-allowed-length",
    "--dry-penalty-last-n --mirostat --mirostat-lr --mirostat-ent --ignore-eos",
    "--dynatemp-range --dynatemp-exp",
    # devices and offload
    "-dev --device -ngl --gpu-layers --n-gpu-layers -sm --split-mode -ts --tensor-split",
    "-mg --main-gpu -fit --fit -fitt --fit-target -fitc --fit-ctx",
    # memory and KV cache
    "-kvo --kv-offload -nkvo --no-kv-offload --repack -nr --no-repack --no-host",
    "-ctk --cache-type-k -ctv --cache-type-v --mlock --mmap --no-mmap -dio --direct-io",
    "-ndio --no-direct-io -cram --cache-ram -kvu --kv-unified --context-shift --no-context-shift",
    # RoPE and YaRN
    "--rope-scaling --rope-scale --rope-freq-base --rope-freq-scale --yarn-orig-ctx",
    "--yarn-ext-factor --yarn-attn-factor --yarn-beta-slow --yarn-beta-fast",
    # serving
    "-np --parallel -cb --cont-batching -nocb --no-cont-batching --warmup --no-warmup",
    "-to --timeout --threads-http --cache-prompt --no-cache-prompt --cache-reuse",
    "--sleep-idle-seconds",
    # multimodal, without paths
    "--mmproj-auto --no-mmproj --no-mmproj-auto --mmproj-offload --no-mmproj-offload",
    "--image-min-tokens --image-max-tokens --spm-infill",
    # speculative decoding tuning, without paths
    "--draft --draft-n --draft-max --draft-min --draft-n-min --draft-p-min -cd --ctx-size-draft",
    "-devd --device-draft -ngld --gpu-layers-draft --n-gpu-layers-draft -td --threads-draft",
    "-tbd --threads-batch-draft",
    "--lora-init-without-apply --control-vector-layer-range",
    # grammar and templates, without paths
    "--grammar -j --json-schema -bs --backend-sampling",
    "--chat-template --chat-template-kwargs --jinja --no-jinja --pooling --reasoning-format",
    "--reasoning-budget --prefill-assistant --no-prefill-assistant",
    # API surface
    "--api-prefix --webui --no-webui --webui-config --api-key --metrics --no-metrics --props",
    "--slots --no-slots",
    # embeddings, reranking, MoE, diagnostics
    "--embedding --embeddings --rerank --reranking -sps --slot-prompt-similarity",
    "-cmoe --cpu-moe -ncmoe --n-cpu-moe --check-tensors --op-offload --no-op-offload",
    "-v --verbose",
)
"""llama-server flags `_configure` accepts (DMR's list: runtime_flags_allowlist.go)."""

ALLOWED_FLAGS: dict[str, frozenset[str]] = {LLAMA_CPP: LLAMA_CPP_FLAGS}
"""Allowlists by backend; a backend without one accepts no flag at all."""

_NUMBER = re.compile(r"^-?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")


def flag_key(argument: str) -> str | None:
    """The flag an argument names ("--threads=4" -> "--threads"), or None for a value.

    A negative number ("-1", "-0.5") is a value, so `--reasoning-budget -1` works.
    """
    if not argument.startswith("-") or _NUMBER.match(argument):
        return None
    return argument.split("=", 1)[0]


def validate_runtime_flags(flags: Iterable[str], backend: str = LLAMA_CPP) -> tuple[str, ...]:
    """Return `flags` as a tuple if every one is safe for `backend`.

    Raises:
        InvalidInput: A flag is not allowlisted, an argument holds a path character, or a
            `--flag=value` value looks like another flag.
    """
    allowed = ALLOWED_FLAGS.get(backend, frozenset())
    checked: list[str] = []
    for argument in flags:
        if not isinstance(argument, str):
            raise InvalidInput(f"runtime flags must be strings, got {argument!r}")
        key = flag_key(argument)
        if key is not None and key not in allowed:
            raise InvalidInput(f"runtime flag {key!r} is not allowed for backend {backend!r}")
        if "/" in argument or "\\" in argument:
            raise InvalidInput(
                f"invalid runtime flag {argument!r}: paths are not allowed (contains '/' or '\\')"
            )
        if key is not None and "=" in argument:
            value = argument.split("=", 1)[1]
            if value.startswith("-") and not _NUMBER.match(value):
                raise InvalidInput(
                    f"invalid runtime flag {argument!r}: the value of {key} may not start "
                    "with '-' unless it is a number"
                )
        checked.append(argument)
    return tuple(checked)


def split_raw_flags(raw: str) -> list[str]:
    """Split `raw-runtime-flags` the way a shell would.

    Raises:
        InvalidInput: The quoting is unbalanced.
    """
    try:
        return shlex.split(raw)
    except ValueError as error:
        raise InvalidInput(f"cannot split raw-runtime-flags {raw!r}: {error}") from None


def sets_flag(flags: Sequence[str], *names: str) -> bool:
    """Whether `flags` contain one of `names`, bare or as `--name=value`."""
    return any(flag_key(flag) in names for flag in flags)
