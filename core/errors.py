"""Errors the core raises; each has a message fit for a user and the HTTP status it maps to."""

from __future__ import annotations


class CoreError(Exception):
    """Base of every error the core raises on purpose."""

    status: int = 500
    """The HTTP status a front end should answer with."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
        """What went wrong, in words a user can act on."""


class InvalidInput(CoreError):
    """The caller sent something malformed: a bad flag, path, JSON body or value."""

    status = 400


class InvalidReference(InvalidInput):
    """A model name, tag or digest does not parse."""


class ModelNotFound(CoreError):
    """No stored model matches the reference."""

    status = 404


class Conflict(CoreError):
    """The store's current state forbids the request (e.g. removing an ID that has several tags)."""

    status = 409


class StoreCorrupt(CoreError):
    """The store on disk is not in DMR's format or is damaged."""

    status = 500


class EngineUnavailable(CoreError):
    """No llama-server binary could be found or built."""

    status = 503


class RunnerFailed(CoreError):
    """A llama-server process failed to start or died while serving."""

    status = 500


class RunnerBusy(CoreError):
    """Every slot of a model's runner is taken and its queue is full, or the wait timed out."""

    status = 503


class InsufficientMemory(CoreError):
    """A model cannot fit in free memory, even with every idle runner stopped."""

    status = 503


class RunnerGone(RunnerFailed):
    """The model's llama-server was stopped (unloaded, removed, shut down) under a request."""

    status = 503
