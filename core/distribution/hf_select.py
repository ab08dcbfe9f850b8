"""Which files of a Hugging Face repository a pull takes: the GGUF quant, shards, mmproj, template.

Pure functions over the repository's file list, following DMR's rules (reference §5):

- weights are `.gguf` and `.safetensors` files; a file with "mmproj" in its name is a projector;
- a requested quant (the tag, unless "latest", "main" or empty) matches case-insensitively as
  `[-._/]QUANT` followed by `[-._/]` or the end of the name; the first matching file is taken
  with every shard of it (`-00001-of-0000N`);
- without one, Q4_K_M; failing that, the lexically first GGUF and its shards;
- the projector preferred is the F16 one, else the first.

Two deliberate differences from DMR: an explicit quant that matches nothing is an error listing the
quants the repository has (DMR silently falls back to another quant and stores it under the tag
asked for), and a repository holding both GGUF and safetensors weights gives the GGUF, the one
format llama.cpp runs (DMR builds a V0.2 artifact of everything).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from modelrunner.core.errors import ModelNotFound

DEFAULT_QUANT = "Q4_K_M"
"""The quant DMR picks when the tag names none."""

_UNSPECIFIED_TAGS = frozenset({"", "latest", "main"})

_SHARD_RE = re.compile(r"-(\d{5})-of-(\d{5})(?=\.gguf$)", re.IGNORECASE)
_QUANT_LABEL_RE = re.compile(
    r"(?:^|[-._/])("
    r"I?Q\d(?:_[A-Z0-9]+)*|TQ\d_\d|MXFP4(?:_MOE)?|B?F16|F32|FP16|FP32|FP8"
    r")(?=[-._/]|$)",
    re.IGNORECASE,
)
_CONFIG_SUFFIXES = (".json", ".txt", ".md", ".vocab", ".jinja")


@dataclass(frozen=True, slots=True)
class Selection:
    """The files of a repository one pull downloads, and what each is for."""

    format: Literal["gguf", "safetensors"]
    weights: tuple[str, ...]
    """GGUF shards in order (or the single GGUF), or every safetensors file."""
    mmproj: str | None = None
    """The multimodal projector for a GGUF model, if the repository has one."""
    chat_template: str | None = None
    """A Jinja chat template file for a GGUF model, if the repository has one."""
    extras: tuple[str, ...] = ()
    """Config, tokenizer and other small files that go into a safetensors (V0.2) artifact."""
    quant: str | None = None
    """The quant label of the chosen GGUF as its file name spells it, when it carries one."""

    @property
    def files(self) -> tuple[str, ...]:
        """Every file to download, weights first."""
        optional = tuple(name for name in (self.mmproj, self.chat_template) if name is not None)
        return self.weights + optional + self.extras


def basename(path: str) -> str:
    """The last component of a repository path."""
    return path.rsplit("/", 1)[-1]


def is_mmproj(path: str) -> bool:
    """Whether a GGUF is a multimodal projector (DMR: "mmproj" anywhere in its name)."""
    return "mmproj" in basename(path).lower()


def is_config_file(path: str) -> bool:
    """DMR's config files: .json, .txt, .md, .vocab, tokenizer.model, .jinja, *chat_template*."""
    name = basename(path).lower()
    return name.endswith(_CONFIG_SUFFIXES) or name == "tokenizer.model" or "chat_template" in name


def is_chat_template(path: str) -> bool:
    """A Jinja template file (`*.jinja`, or a non-JSON file named like chat_template)."""
    name = basename(path).lower()
    return name.endswith(".jinja") or ("chat_template" in name and not name.endswith(".json"))


def quant_label(path: str) -> str | None:
    """The quant a GGUF file name spells ("Model-Q4_K_M.gguf" -> "Q4_K_M"), or None."""
    stem = _SHARD_RE.sub("", path)
    stem = stem[: -len(".gguf")] if stem.lower().endswith(".gguf") else stem
    labels = _QUANT_LABEL_RE.findall(stem)
    return labels[-1] if labels else None


def available_quants(files: Iterable[str]) -> list[str]:
    """The quants a repository's GGUF weights come in, upper-case, sorted, without duplicates."""
    labels = {
        label.upper()
        for path in files
        if path.lower().endswith(".gguf") and not is_mmproj(path)
        if (label := quant_label(path)) is not None
    }
    return sorted(labels)


def _matches_quant(path: str, quant: str) -> bool:
    pattern = rf"[-._/]{re.escape(quant)}(?:[-._/]|$)"
    return re.search(pattern, path, re.IGNORECASE) is not None


def _shard_group(path: str) -> str:
    """The name shared by every shard of a split GGUF (the path itself when not split)."""
    return _SHARD_RE.sub("", path)


def _with_shards(first: str, ggufs: Sequence[str]) -> list[str]:
    if _SHARD_RE.search(first) is None:
        return [first]
    group = _shard_group(first)
    return sorted(path for path in ggufs if _shard_group(path) == group)


def _pick_mmproj(projectors: Sequence[str]) -> str | None:
    if not projectors:
        return None
    for path in projectors:  # an exact F16 label first, then anything spelling f16 (e.g. BF16)
        label = quant_label(path)
        if label is not None and label.upper() in ("F16", "FP16"):
            return path
    for path in projectors:
        if "f16" in basename(path).lower():
            return path
    return projectors[0]


def _pick_ggufs(ggufs: list[str], quant: str, repository: str) -> tuple[list[str], str | None]:
    requested = quant.strip()
    if requested.lower() not in _UNSPECIFIED_TAGS:
        chosen = [path for path in ggufs if _matches_quant(path, requested)]
        groups = {_shard_group(path) for path in ggufs}
        if not chosen and len(groups) == 1 and all(quant_label(p) is None for p in ggufs):
            chosen = list(ggufs)  # one unlabelled model: nothing says it is not that quant
        if not chosen:
            quants = available_quants(ggufs)
            listed = ", ".join(quants) if quants else "none named in its file names"
            raise ModelNotFound(
                f"{repository} has no GGUF file for quantization {requested!r}; available: {listed}"
            )
        return _with_shards(chosen[0], ggufs), requested
    chosen = [path for path in ggufs if _matches_quant(path, DEFAULT_QUANT)]
    if chosen:
        return _with_shards(chosen[0], ggufs), quant_label(chosen[0]) or DEFAULT_QUANT
    first = _with_shards(ggufs[0], ggufs)
    return first, quant_label(first[0])


def select_files(files: list[str], quant: str, *, repository: str = "the repository") -> Selection:
    """Choose what to download from a repository's file paths for a quant tag.

    Raises:
        ModelNotFound: The repository has no GGUF or safetensors weights, or no GGUF for an
            explicitly requested quant (the message lists the quants it has).
    """
    paths = sorted(set(files))
    ggufs = [path for path in paths if path.lower().endswith(".gguf")]
    models = [path for path in ggufs if not is_mmproj(path)]
    safetensors = [path for path in paths if path.lower().endswith(".safetensors")]
    if models:
        weights, label = _pick_ggufs(models, quant, repository)
        template = next((path for path in paths if is_chat_template(path)), None)
        return Selection(
            format="gguf",
            weights=tuple(weights),
            mmproj=_pick_mmproj([path for path in ggufs if is_mmproj(path)]),
            chat_template=template,
            quant=label,
        )
    if safetensors:
        extras = tuple(path for path in paths if is_config_file(path))
        return Selection(format="safetensors", weights=tuple(safetensors), extras=extras)
    raise ModelNotFound(f"{repository} has no GGUF or safetensors weights to pull")
