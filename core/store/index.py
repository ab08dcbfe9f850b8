"""models.json: entries {id, tags, files}, tag moves and reference matching, as DMR keeps them."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from modelrunner.core.errors import InvalidInput, InvalidReference, ModelNotFound, StoreCorrupt
from modelrunner.core.references import ModelReference, id_hex, looks_like_id, parse_reference
from modelrunner.core.store import go_json
from modelrunner.core.store.layout import parse_digest

_MODEL_ID_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_HF_PREFIX = "hf.co/"
_HF_STORED_PREFIX = "huggingface.co/"


def canonical_tag(stored_tag: str) -> str:
    """The normalised form of a tag read from models.json (a tag that does not parse is kept)."""
    try:
        return parse_reference(stored_tag).stored
    except InvalidReference:
        return stored_tag


@dataclass
class IndexEntry:
    """One model in models.json."""

    id: str
    """"sha256:<hex>" of the manifest bytes."""
    tags: list[str] = field(default_factory=list)
    """Stored tags, e.g. "docker.io/ai/smollm2:latest" (null in the file when empty)."""
    files: list[str] = field(default_factory=list)
    """Layer digests in manifest order, then the config digest."""

    def has_tag(self, reference: ModelReference) -> bool:
        """Whether one of the tags is this reference (in any spelling)."""
        wanted = reference.stored
        return any(canonical_tag(tag) == wanted for tag in self.tags)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "tags": list(self.tags) or None, "files": list(self.files)}


@dataclass
class Index:
    """The whole of models.json."""

    entries: list[IndexEntry] = field(default_factory=list)
    models_null: bool = False
    """DMR writes `"models": null` once its last model is deleted; we keep that spelling."""

    @classmethod
    def parse(cls, data: bytes) -> Index:
        """Read models.json bytes, migrating `hf.co/` tags to `huggingface.co/` like DMR.

        Raises:
            StoreCorrupt: The file is not DMR's index format.
        """
        try:
            document = json.loads(data)
        except ValueError as error:
            raise StoreCorrupt(f"models.json is not valid JSON: {error}") from error
        if not isinstance(document, dict) or "models" not in document:
            raise StoreCorrupt('models.json has no "models" list')
        models = document["models"]
        if models is None:
            return cls(entries=[], models_null=True)
        if not isinstance(models, list):
            raise StoreCorrupt('models.json: "models" is not a list')
        return cls(entries=[_parse_entry(item, position) for position, item in enumerate(models)])

    def dump(self) -> bytes:
        """models.json bytes as DMR writes them (Go MarshalIndent, two spaces)."""
        if not self.entries and self.models_null:
            return go_json.marshal_indent({"models": None})
        return go_json.marshal_indent({"models": [entry.to_json() for entry in self.entries]})

    def by_id(self, model_id: str) -> IndexEntry | None:
        """The entry with exactly this ID."""
        return next((entry for entry in self.entries if entry.id == model_id), None)

    def by_tag(self, reference: ModelReference) -> IndexEntry | None:
        """The entry holding this tag."""
        return next((entry for entry in self.entries if entry.has_tag(reference)), None)

    def by_id_prefix(self, hex_prefix: str) -> list[IndexEntry]:
        """Every entry whose ID hex starts with the prefix."""
        return [
            entry for entry in self.entries if entry.id[len("sha256:") :].startswith(hex_prefix)
        ]

    def resolve(self, text: str) -> IndexEntry:
        """Find a model by tag (any spelling), name@digest, full ID, 64 hex, or unique ID prefix.

        Raises:
            InvalidReference: Neither a valid name nor an ID.
            InvalidInput: An ID prefix matches several models.
            ModelNotFound: Nothing matches.
        """
        text = text.strip()
        hex_text = id_hex(text)
        if hex_text is not None and len(hex_text) == 64:
            entry = self.by_id("sha256:" + hex_text)
            if entry is None:
                raise ModelNotFound(f"model {text} not found")
            return entry
        reference: ModelReference | None = None
        parse_error: InvalidReference | None = None
        try:
            reference = parse_reference(text)
        except InvalidReference as error:
            parse_error = error
        if reference is not None:
            if reference.digest is not None:
                entry = self.by_id(reference.digest)
                if entry is not None:
                    return entry
            else:
                entry = self.by_tag(reference)
                if entry is not None:
                    return entry
        if hex_text is not None and looks_like_id(text):
            matches = self.by_id_prefix(hex_text)
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                shown = ", ".join(entry.id[7:19] for entry in matches)
                raise InvalidInput(
                    f"ID prefix {text!r} is ambiguous: it matches {len(matches)} models ({shown}); "
                    "give more characters"
                )
        if parse_error is not None and hex_text is None:
            raise parse_error
        raise ModelNotFound(f"model {text} not found")

    def add(self, entry: IndexEntry) -> IndexEntry:
        """Add an entry unless its ID is already listed; returns the listed entry."""
        existing = self.by_id(entry.id)
        if existing is not None:
            return existing
        self.entries.append(entry)
        self.models_null = False
        return entry

    def add_tag(self, model_id: str, reference: ModelReference) -> str:
        """Give a model a tag, taking it away from any other model; returns the stored tag."""
        stored = reference.stored
        for entry in self.entries:
            entry.tags = [tag for tag in entry.tags if canonical_tag(tag) != stored]
        target = self.by_id(model_id)
        if target is None:
            raise ModelNotFound(f"model {model_id} not found")
        target.tags.append(stored)
        return stored

    def remove_tag(self, reference: ModelReference) -> str:
        """Take a tag off its model; returns the tag as it was stored.

        Raises:
            ModelNotFound: No model has the tag.
        """
        wanted = reference.stored
        for entry in self.entries:
            for tag in entry.tags:
                if canonical_tag(tag) == wanted:
                    entry.tags.remove(tag)
                    return tag
        raise ModelNotFound(f"tag {reference.normalized} not found")

    def remove(self, model_id: str) -> IndexEntry:
        """Drop a model's entry; returns it."""
        entry = self.by_id(model_id)
        if entry is None:
            raise ModelNotFound(f"model {model_id} not found")
        self.entries.remove(entry)
        if not self.entries:
            self.models_null = True
        return entry

    def is_referenced(self, digest: str) -> bool:
        """Whether any entry lists this blob digest."""
        return any(digest in entry.files for entry in self.entries)


def _parse_entry(item: object, position: int) -> IndexEntry:
    if not isinstance(item, dict):
        raise StoreCorrupt(f"models.json: model #{position + 1} is not an object")
    model_id = item.get("id")
    if not isinstance(model_id, str) or not _MODEL_ID_RE.match(model_id):
        raise StoreCorrupt(f"models.json: model #{position + 1} has an invalid id {model_id!r}")
    tags = item.get("tags") or []
    files = item.get("files") or []
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise StoreCorrupt(f"models.json: model {model_id} has invalid tags")
    if not isinstance(files, list) or not all(isinstance(name, str) for name in files):
        raise StoreCorrupt(f"models.json: model {model_id} has an invalid files list")
    for digest in files:
        try:
            parse_digest(digest)
        except InvalidInput as error:
            raise StoreCorrupt(f"models.json: model {model_id}: {error.message}") from error
    migrated = [
        _HF_STORED_PREFIX + tag[len(_HF_PREFIX) :] if tag.startswith(_HF_PREFIX) else tag
        for tag in tags
    ]
    return IndexEntry(id=model_id, tags=migrated, files=list(files))
