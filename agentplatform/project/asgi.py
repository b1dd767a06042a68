"""The ASGI application: HTTP through Django, websockets through Channels."""

from __future__ import annotations

import os

from agentplatform.devtools import embedded

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentplatform.project.settings")
# A server process never owns the embedded services: it re-attaches to what `make run` started.
embedded.configure(stop_on_exit=False)

import django  # noqa: E402

django.setup(set_prefix=False)

from agentplatform.http.asgi import SyncChainASGIHandler  # noqa: E402

django_asgi_app = SyncChainASGIHandler()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from agentplatform.project.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter(websocket_urlpatterns),
    }
)
