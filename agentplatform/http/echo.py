"""A bare Channels echo consumer: the baseline bench/ws_load.py compares the session
consumer with (what Channels itself costs per message). Routed only when WS_ECHO_ENDPOINT
is on."""

from __future__ import annotations

from channels.generic.websocket import AsyncWebsocketConsumer


class EchoConsumer(AsyncWebsocketConsumer):
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send(text_data=text_data, bytes_data=bytes_data)
