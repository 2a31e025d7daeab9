# anyio's asyncio backend is imported before trio_asyncio, as in a worker whose app made anyio
# load it first: it then holds asyncio's original get_running_loop (see asyncio_bridge).
import anyio._backends._asyncio  # noqa: F401
