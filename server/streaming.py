"""A streamed response that ends as soon as its client leaves, even while it sends nothing."""

from __future__ import annotations

import logging

import anyio
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from modelrunner.core.errors import CoreError

logger = logging.getLogger(__name__)


class ListeningStreamingResponse(StreamingResponse):
    """Streams its body while listening for `http.disconnect`, then releases what it streams
    from (`release`), however the stream ended.

    Starlette only notices a disconnect on a failed send under ASGI 2.4; a model that is still
    thinking, or a followed log with no new line, sends nothing, so the response listens itself.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            async with anyio.create_task_group() as task_group:

                async def stream_then_stop() -> None:
                    await self.stream_response(send)
                    task_group.cancel_scope.cancel()

                task_group.start_soon(stream_then_stop)
                await self.listen_for_disconnect(receive)
                task_group.cancel_scope.cancel()
        except* OSError:
            pass  # the client went away mid-send; nothing is left to answer
        except* CoreError as failures:
            # The status line is gone already: leave the response unfinished so the client
            # sees a broken stream rather than a complete-looking one.
            logger.warning("stream broke off: %s", failures.exceptions[0])
        finally:
            with anyio.CancelScope(shield=True):
                await self.release()

    async def release(self) -> None:
        """Close the body's iterator (and with it what it reads); subclasses release more."""
        close = getattr(self.body_iterator, "aclose", None)
        if close is not None:
            await close()
