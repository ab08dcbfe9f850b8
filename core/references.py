"""Model references: parse, normalise and display names as DMR does ("gemma3" -> "ai/gemma3")."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from modelrunner.core.errors import InvalidReference

DEFAULT_REGISTRY = "docker.io"
"""The registry a reference without an explicit one lives in, as DMR stores it."""

DEFAULT_NAMESPACE = "ai"
"""The organisation DMR puts in front of a bare name."""

DEFAULT_TAG = "latest"

HUGGINGFACE = "hf.co"
"""How we write Hugging Face references; DMR stores them as huggingface.co."""

_HF_ALIASES = ("hf.co", "huggingface.co")
_DOCKER_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io")

MAX_NAME_LENGTH = 255
"""distribution/reference's limit on the length of a repository name with its registry."""

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(
    rf"^(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?$"
)
_PATH_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_ID_RE = re.compile(r"^(?:sha256:([0-9a-f]{4,64})|([0-9a-f]{12,64}))$")
"""A model ID or ID prefix: after "sha256:" at least 4 hex; bare, at least the 12 of the short
ID `list` shows, so a hex-looking name ("beef", "cafe01") is never taken for an ID (an `rm`
of a model not stored must not delete another one whose ID starts that way)."""


@dataclass(frozen=True, slots=True)
class ModelReference:
    """A parsed, normalised model reference."""

    registry: str
    """Where the model lives: "docker.io", "hf.co", "localhost:5000"."""
    repository: str
    """The path inside the registry: "ai/gemma3", "bartowski/model"."""
    tag: str
    """The tag; "latest" when none was given."""
    digest: str | None = None
    """"sha256:<64 hex>" when the reference pins a manifest, else None."""
    tag_given: bool = field(default=True, compare=False)
    """Whether the text named the tag; "repo@sha256:…" names none (tag is then "latest")."""

    @property
    def is_huggingface(self) -> bool:
        """Whether the model comes from Hugging Face."""
        return self.registry == HUGGINGFACE

    @property
    def name(self) -> str:
        """The repository, with its registry unless Docker Hub: "ai/gemma3", "hf.co/org/m"."""
        if self.registry == DEFAULT_REGISTRY:
            return self.repository
        return f"{self.registry}/{self.repository}"

    @property
    def normalized(self) -> str:
        """The canonical spelling: "ai/gemma3:latest", "hf.co/org/model:latest", "ai/x@sha256:…"."""
        if self.digest is not None:
            if self.tag_given:
                return f"{self.name}:{self.tag}@{self.digest}"
            return f"{self.name}@{self.digest}"
        return f"{self.name}:{self.tag}"

    @property
    def stored(self) -> str:
        """The form DMR writes in models.json: "docker.io/ai/gemma3:latest", "huggingface.co/o/m:v".

        DMR strips a digest when tagging, so a digest reference is stored under its tag.
        """
        registry = "huggingface.co" if self.is_huggingface else self.registry
        return f"{registry}/{self.repository}:{self.tag}"

    @property
    def display(self) -> str:
        """The short form people read: "gemma3", "gemma3:v1", "org/x", "hf.co/org/x:Q4_K_M"."""
        name = self.name
        if self.registry == DEFAULT_REGISTRY and name.startswith(f"{DEFAULT_NAMESPACE}/"):
            name = name[len(DEFAULT_NAMESPACE) + 1 :]
        if self.digest is not None:
            return f"{name}@{self.digest}"
        if self.tag == DEFAULT_TAG:
            return name
        return f"{name}:{self.tag}"

    def with_tag(self, tag: str) -> ModelReference:
        """The same repository under another tag."""
        return parse_reference(f"{self.name}:{tag}")


def looks_like_id(text: str) -> bool:
    """Whether text could be a model ID or an ID prefix ("sha256:" and >= 4 hex, or >= 12 hex)."""
    return _ID_RE.match(text.strip()) is not None


def id_hex(text: str) -> str | None:
    """The hex part of an ID or ID prefix, or None when text is not one."""
    match = _ID_RE.match(text.strip())
    return (match.group(1) or match.group(2)) if match else None


def parse_reference(text: str) -> ModelReference:
    """Parse and normalise a model reference the way DMR does.

    Raises:
        InvalidReference: The text is empty, malformed, too long, upper-case outside hf.co, or has
            a bad tag or digest.
    """
    original = text
    text = text.strip()
    if not text:
        raise InvalidReference("invalid model reference: the name is empty")
    if any(ch.isspace() for ch in text):
        raise InvalidReference(f"invalid model reference {original!r}: names cannot contain spaces")
    if "://" in text:
        raise InvalidReference(
            f"invalid model reference {original!r}: give a name like ai/smollm2, not a URL"
        )

    digest: str | None = None
    if "@" in text:
        text, digest = text.split("@", 1)
        if not _DIGEST_RE.match(digest):
            raise InvalidReference(
                f"invalid model reference {original!r}: a digest must be sha256: followed by "
                "64 lower-case hex digits"
            )

    tag = ""
    last_slash = text.rfind("/")
    last_colon = text.rfind(":")
    if last_colon > last_slash:
        text, tag = text[:last_colon], text[last_colon + 1 :]
    tag_given = bool(tag)
    tag = tag or DEFAULT_TAG
    if not _TAG_RE.match(tag):
        raise InvalidReference(
            f"invalid model reference {original!r}: tag {tag!r} must be at most 128 letters, "
            "digits, '_', '.' or '-', not starting with '.' or '-'"
        )

    parts = text.split("/")
    registry = DEFAULT_REGISTRY
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        registry = parts.pop(0)
        if not _DOMAIN_RE.match(registry):
            raise InvalidReference(
                f"invalid model reference {original!r}: {registry!r} is not a registry host"
            )
        lowered = registry.lower()
        if lowered in _HF_ALIASES:
            registry = HUGGINGFACE
        elif lowered in _DOCKER_HUB_ALIASES:
            registry = DEFAULT_REGISTRY
    if registry == HUGGINGFACE:
        # Hugging Face repositories are case-insensitive; DMR lowercases them.
        parts = [part.lower() for part in parts]
    if registry == DEFAULT_REGISTRY and len(parts) == 1:
        parts.insert(0, DEFAULT_NAMESPACE)
    for part in parts:
        if _PATH_COMPONENT_RE.match(part):
            continue
        if part.lower() != part and _PATH_COMPONENT_RE.match(part.lower()):
            suggestion = "/".join(p.lower() for p in parts)
            raise InvalidReference(
                f"invalid model reference {original!r}: repository names must be lower-case "
                f"(did you mean {suggestion!r}?)"
            )
        shown = repr(part) if part else "an empty path component"
        raise InvalidReference(
            f"invalid model reference {original!r}: {shown} is not a valid name component "
            "(use lower-case letters, digits and single '.', '_' or '-' separators)"
        )
    repository = "/".join(parts)
    full = f"{registry}/{repository}"
    if len(full) > MAX_NAME_LENGTH:
        raise InvalidReference(
            f"invalid model reference: the name is {len(full)} characters long, "
            f"at most {MAX_NAME_LENGTH} are allowed"
        )
    return ModelReference(
        registry=registry, repository=repository, tag=tag, digest=digest, tag_given=tag_given
    )


def normalize(text: str) -> str:
    """The canonical spelling of a reference ("gemma3" -> "ai/gemma3:latest")."""
    return parse_reference(text).normalized


def display_name(stored_tag: str) -> str:
    """The short form of a tag as stored in models.json ("docker.io/ai/x:latest" -> "x").

    A tag that does not parse (a store written by another tool) is shown as it is.
    """
    try:
        return parse_reference(stored_tag).display
    except InvalidReference:
        return stored_tag


def model_name(tags: Sequence[str], model_id: str) -> str:
    """What the API calls a stored model: its first tag, normalised ("ai/smollm2:135M-Q4_1").

    One spelling however a request named the model: `GET /v1/models` lists it, and
    `/engines/ps`, metrics and llama-server's `--alias` use it. A model without a tag is its ID;
    a tag that does not parse is shown as stored.
    """
    if not tags:
        return model_id
    try:
        return parse_reference(tags[0]).normalized
    except InvalidReference:
        return tags[0]
