"""A minimal Django project in one module: settings, one URL, and async views.

``DJANGO_SETTINGS_MODULE=tests.asyncio_mode.django_site``; the ASGI app is
:mod:`tests.asyncio_mode.django_asgi`.
"""

from __future__ import annotations

import asyncio
import os
import threading

from asgiref.sync import sync_to_async
from django.http import HttpRequest, JsonResponse, StreamingHttpResponse
from django.urls import path

SECRET_KEY = "tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = __name__
INSTALLED_APPS: list[str] = []
DATABASES: dict[str, object] = {}
USE_TZ = True
LOGGING_CONFIG = None  # leave trioserve's logging alone


async def info(request: HttpRequest) -> JsonResponse:
    """Plain asyncio, a sync call through asgiref's thread, and the running task."""
    await asyncio.sleep(0.001)
    worker_thread = await sync_to_async(threading.get_ident, thread_sensitive=False)()
    return JsonResponse(
        {
            "task": asyncio.current_task() is not None,
            "other_thread": worker_thread != threading.get_ident(),
            "path": request.path,
            "pid": os.getpid(),
        }
    )


async def stream(request: HttpRequest) -> StreamingHttpResponse:
    async def chunks():  # type: ignore[no-untyped-def]
        for i in range(3):
            await asyncio.sleep(0.001)
            yield f"chunk {i}\n"

    return StreamingHttpResponse(chunks(), content_type="text/plain")


urlpatterns = [path("info", info), path("stream", stream)]
