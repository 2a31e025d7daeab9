"""Django's own ASGI application for :mod:`tests.asyncio_mode.django_site`."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.asyncio_mode.django_site")

from django.core.asgi import get_asgi_application

application = get_asgi_application()
