"""A WebSocket chat room with Starlette: ``trioserve examples.chat:app``, then open
http://127.0.0.1:8000/ in two browser tabs.

Each browser opens ``/ws?name=...``; every message is broadcast to everyone in the room.
The room lives in the lifespan state (the server copies it into each WebSocket's scope),
and a member whose connection died is dropped on the next broadcast.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

PAGE = """<!doctype html>
<html>
<head><meta charset="utf-8"><title>trioserve chat</title></head>
<body>
<h1>trioserve chat</h1>
<p><input id="name" placeholder="your name" value="guest">
<button id="join">join</button></p>
<ul id="log"></ul>
<form id="form"><input id="text" autocomplete="off" disabled><button disabled>send</button></form>
<script>
let ws;
const log = (text) => {
  const li = document.createElement("li");
  li.textContent = text;
  document.getElementById("log").appendChild(li);
};
document.getElementById("join").onclick = () => {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const name = encodeURIComponent(document.getElementById("name").value);
  ws = new WebSocket(`${scheme}://${location.host}/ws?name=${name}`);
  ws.onmessage = (event) => log(event.data);
  ws.onclose = (event) => log(`(disconnected: ${event.code})`);
  ws.onopen = () => {
    for (const el of document.querySelectorAll("#form *")) el.disabled = false;
  };
};
document.getElementById("form").onsubmit = (event) => {
  event.preventDefault();
  const input = document.getElementById("text");
  if (ws && input.value) ws.send(input.value);
  input.value = "";
};
</script>
</body>
</html>
"""


class Room:
    """Who is connected; ``broadcast`` sends to all of them and forgets the dead."""

    def __init__(self) -> None:
        self.members: set[WebSocket] = set()

    async def broadcast(self, text: str) -> None:
        for member in list(self.members):
            try:
                await member.send_text(text)
            except (OSError, WebSocketDisconnect, RuntimeError):
                self.members.discard(member)


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    yield {"room": Room()}


async def homepage(request: Request) -> HTMLResponse:
    return HTMLResponse(PAGE)


async def chat(websocket: WebSocket) -> None:
    room: Room = websocket.state.room
    name = websocket.query_params.get("name", "guest")[:32]
    await websocket.accept()
    room.members.add(websocket)
    await room.broadcast(f"{name} joined")
    try:
        while True:
            text = await websocket.receive_text()
            await room.broadcast(f"{name}: {text}")
    except WebSocketDisconnect:
        pass
    finally:
        room.members.discard(websocket)
    await room.broadcast(f"{name} left")


app = Starlette(
    routes=[Route("/", homepage), WebSocketRoute("/ws", chat)],
    lifespan=lifespan,
)
