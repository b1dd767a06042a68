// The end user's chat page: no build step. It renders the history the server embedded,
// opens the session websocket, streams replies, and on every (re)connect asks the server to
// `resume` after the last frame it saw, skipping frames it already has (by their seq).
(function () {
  "use strict";
  const config = JSON.parse(document.getElementById("chat-config").textContent);
  const list = document.getElementById("messages");
  const form = document.getElementById("composer");
  const input = document.getElementById("input");
  const statusEl = document.getElementById("status");

  let token = config.token;
  let lastSeq = config.lastSeq;
  let socket = null;
  let retry = 0;
  const shown = new Map();      // message seq -> element
  const pending = new Map();    // client_message_id -> this tab's optimistic user element
  const asked = new Map();      // turn -> the user's element (from any tab)
  const streaming = new Map();  // turn -> element of the reply in progress
  const cards = new Map();      // "run:call" -> the card of a call waiting for an action

  function setStatus(text, online) {
    statusEl.textContent = text;
    statusEl.classList.toggle("is-online", Boolean(online));
  }

  function bubble(role, text, extraClass) {
    const item = document.createElement("li");
    item.className = "msg msg--" + role + (extraClass ? " " + extraClass : "");
    const body = document.createElement("span");
    body.className = "msg__body";
    body.textContent = text;
    item.appendChild(body);
    const meta = document.createElement("span");
    meta.className = "msg__meta";
    item.appendChild(meta);
    list.appendChild(item);
    list.scrollTop = list.scrollHeight;
    return item;
  }

  function showMessage(message, turn) {
    if (shown.has(message.seq)) return;
    // Tool results, and the empty assistant messages that only called tools, are the
    // agent's own steps: the page shows the conversation (and cards for pending calls).
    if (message.role === "tool" || (message.role === "assistant" && !message.content)) return;
    const open = message.role === "user" ? asked : streaming;
    let element = turn ? open.get(turn) : null;
    if (turn) open.delete(turn);
    if (!element) element = bubble(message.role, message.content);
    element.className = "msg msg--" + message.role + " msg--" + message.status;
    element.querySelector(".msg__body").textContent = message.content;
    element.querySelector(".msg__meta").textContent = message.status === "active" ? "" : message.status.replace("_", " ");
    element.dataset.seq = message.seq;
    shown.set(message.seq, element);
  }

  function notice(text) {
    const item = document.createElement("li");
    item.className = "notice";
    item.textContent = text;
    list.appendChild(item);
    list.scrollTop = list.scrollHeight;
  }

  // A run waiting for an action: one card per pending call. The end user decides the calls
  // whose approval is theirs (approve / deny); the others say who they wait for.
  function actionCards(runId, required, answered) {
    ((required && required.tool_calls) || []).forEach(function (call) {
      const key = runId + ":" + call.id;
      if (cards.has(key)) return;
      const item = document.createElement("li");
      item.className = "action";
      item.dataset.run = runId;
      const text = document.createElement("p");
      text.className = "action__text";
      text.textContent = "The assistant asks to run " + call.name + " " + JSON.stringify(call.arguments || {});
      item.appendChild(text);
      const state = document.createElement("span");
      state.className = "action__status";
      item.appendChild(state);
      if (call.approval === "end_user" && answered.indexOf(call.id) < 0) {
        [["Approve", true], ["Deny", false]].forEach(function (choice) {
          const button = document.createElement("button");
          button.type = "button";
          button.textContent = choice[0];
          button.className = "action__button";
          button.addEventListener("click", function () { decide(item, runId, call.id, choice[1]); });
          item.appendChild(button);
        });
      } else {
        state.textContent = answered.indexOf(call.id) >= 0 ? "answered" : "waiting for " + (call.approval || "the application").replace("_", " ");
      }
      list.appendChild(item);
      list.scrollTop = list.scrollHeight;
      cards.set(key, item);
    });
  }

  function decide(item, runId, callId, approve) {
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    socket.send(JSON.stringify({ type: "action", run: runId, tool_call_id: callId, approve: approve }));
    item.querySelectorAll("button").forEach(function (button) { button.disabled = true; });
    item.querySelector(".action__status").textContent = approve ? "approved" : "denied";
  }

  const handlers = {
    accepted(frame) {
      // This tab's own message is already on screen; another tab's appears now.
      let element = pending.get(frame.client_message_id || "");
      pending.delete(frame.client_message_id || "");
      if (!element) element = bubble("user", frame.content, "msg--pending");
      element.querySelector(".msg__meta").textContent = "sent";
      asked.set(frame.turn, element);
    },
    queued(frame) {
      const element = asked.get(frame.turn);
      if (element) element.querySelector(".msg__meta").textContent = "queued (" + frame.position + ")";
    },
    token(frame) {
      let element = streaming.get(frame.turn);
      if (!element) {
        element = bubble("assistant", "", "msg--streaming");
        streaming.set(frame.turn, element);
      }
      element.querySelector(".msg__body").textContent += frame.delta;
      list.scrollTop = list.scrollHeight;
    },
    message(frame) { showMessage(frame.message, frame.turn); },
    checkpoint() {},
    rollback(frame) {
      shown.forEach(function (element, seq) {
        if (seq > frame.high_water_seq) {
          element.classList.add("msg--rolled_back");
          element.querySelector(".msg__meta").textContent = "rolled back";
        }
      });
    },
    error(frame) {
      const element = asked.get(frame.turn) || pending.get(frame.client_message_id || "");
      if (element) element.classList.add("msg--failed");
      const stream = streaming.get(frame.turn);
      if (stream) stream.classList.remove("msg--streaming");
      notice(frame.detail || frame.code);
    },
    pong() {},
    run(frame) {
      if (frame.status === "requires_action") {
        actionCards(frame.run, frame.required_action, []);
        return;
      }
      const stream = streaming.get(frame.turn);
      if (stream) stream.classList.remove("msg--streaming");
      cards.forEach(function (item) {
        if (item.dataset.run !== frame.run) return;
        item.classList.add("action--done");
        item.querySelectorAll("button").forEach(function (button) { button.disabled = true; });
      });
    },
  };

  function onFrame(event) {
    const frame = JSON.parse(event.data);
    const sessionFrame = frame.type !== "pong" && !(frame.type === "error" && frame.seq <= lastSeq);
    if (sessionFrame) {
      if (frame.seq <= lastSeq) return;  // already seen (replayed or fanned out twice)
      lastSeq = frame.seq;
    }
    (handlers[frame.type] || function () {})(frame);
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + config.wsPath + "?token=" + encodeURIComponent(token));
    setStatus("connecting…");
    socket.onopen = function () {
      retry = 0;
      setStatus("online", true);
      socket.send(JSON.stringify({ type: "resume", after_seq: lastSeq }));
    };
    socket.onmessage = onFrame;
    socket.onclose = function (event) {
      if (event.code === 4404) { setStatus("this chat does not exist"); return; }
      if (event.code === 4401) { refreshToken(); return; }
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    const delay = Math.min(10000, 500 * Math.pow(2, retry++)) * (0.75 + Math.random() / 2);
    setStatus("reconnecting…");
    setTimeout(connect, delay);
  }

  function refreshToken() {
    if (!config.tokenUrl) { setStatus("this link has expired"); return; }
    fetch(config.tokenUrl, { method: "POST", headers: { "X-CSRFToken": csrfToken() }, credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.json() : Promise.reject(response); })
      .then(function (body) { token = body.token; connect(); })
      .catch(function () { setStatus("signed out"); });
  }

  function csrfToken() {
    const match = document.cookie.match(/(?:^|; )csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function newId() {
    return (window.crypto && crypto.randomUUID) ? crypto.randomUUID() : String(Date.now()) + Math.random();
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    const content = input.value.trim();
    if (!content || !socket || socket.readyState !== WebSocket.OPEN) return;
    const clientId = newId();
    pending.set(clientId, bubble("user", content, "msg--pending"));
    socket.send(JSON.stringify({ type: "message", content: content, client_message_id: clientId }));
    input.value = "";
    input.focus();
  });

  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  config.history.forEach(function (message) { showMessage(message, null); });
  if (config.waiting) actionCards(config.waiting.run, config.waiting.required_action, config.waiting.answered);
  connect();
})();
