"""DMR's backend modes, and which mode a request needs from its path (reference §1.6, §3.8).

A model runs one llama-server per mode it is asked for: a chat and an embeddings request for the
same model use two processes, as in DMR. The request's path chooses the mode; `_configure`'s
`mode` only says which mode's config it writes.
"""

from __future__ import annotations

from modelrunner.core.errors import InvalidInput

COMPLETION = "completion"
EMBEDDING = "embedding"
RERANKING = "reranking"
IMAGE_GENERATION = "image-generation"

MODES = (COMPLETION, EMBEDDING, RERANKING, IMAGE_GENERATION)
"""Every DMR mode; llama.cpp serves all but image generation."""

FALLS_BACK_TO_COMPLETION = (RERANKING, IMAGE_GENERATION)
"""Modes that start with the completion config when none was configured for them (as DMR)."""

_PATH_MODES = {
    "/v1/chat/completions": COMPLETION,
    "/v1/completions": COMPLETION,
    "/v1/messages": COMPLETION,
    "/v1/messages/count_tokens": COMPLETION,
    "/v1/embeddings": EMBEDDING,
    "/rerank": RERANKING,
    "/score": RERANKING,
    "/v1/images/generations": IMAGE_GENERATION,
}


def mode_for_path(path: str) -> str:
    """The mode a request to `path` (as llama-server sees it, e.g. "/v1/embeddings") needs.

    Raises:
        InvalidInput: No mode serves that path.
    """
    mode = _PATH_MODES.get(path.split("?", 1)[0])
    if mode is None:
        raise InvalidInput(f"no runner mode serves {path!r}")
    return mode
