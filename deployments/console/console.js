// voxray console: a WebRTC softphone for trying an agent, plus the live event log and call list.
// Plain browser JS, no build step. Tests read `window.voxray` (events, rms(), peakRms).
"use strict";

const $ = (id) => document.getElementById(id);

const voxray = (window.voxray = {
  events: [],          // every event received on the call's WebSocket, parsed
  ws: null,
  pc: null,
  callId: null,
  state: "idle",       // idle | connecting | in-call | ended | failed
  analyser: null,
  peakRms: 0,          // highest remote RMS since the last resetPeak(), 0..1
  rms() { return remoteRms(); },
  resetPeak() { this.peakRms = 0; },
  send(command) { return sendCommand(command); },
});

// -- small helpers --------------------------------------------------------------------

function setState(state, detail) {
  voxray.state = state;
  const el = $("status");
  el.dataset.state = state;
  el.className = `status ${state}`;
  el.textContent = detail ? `${state} · ${detail}` : state;
  const live = state === "in-call";
  for (const id of ["tts", "play", "interrupt", "mute"]) $(id).disabled = !live;
  $("hangup").disabled = !(live || state === "connecting");
  $("call").disabled = live || state === "connecting";
}

// The API token, when the server requires one: open the console as /console?token=...
const apiToken = new URLSearchParams(location.search).get("token");

// Relative to the page, so the console works under any route prefix.
function wsUrl(path) {
  const url = new URL(path, location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  if (apiToken) url.searchParams.set("token", apiToken);  // browsers cannot set WS headers
  return url.toString();
}

function apiFetch(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (apiToken) headers.Authorization = `Bearer ${apiToken}`;
  return fetch(path, { ...options, headers });
}

function sendCommand(command) {
  if (!voxray.ws || voxray.ws.readyState !== WebSocket.OPEN) return false;
  voxray.ws.send(JSON.stringify(command));
  logLine("out", command.command, summarize(command));
  return true;
}

// -- the event log ---------------------------------------------------------------------

// The one or two fields worth reading at a glance, per event.
function summarize(e) {
  switch (e.event ?? e.command) {
    case "asrFinal": case "asrDelta": return `“${e.text}”`;
    case "metrics": return `${e.key} ${e.duration} ms`;
    case "trackStart": return e.playId ? `playId ${e.playId}` : "";
    case "trackEnd": return `${e.duration} ms${e.playId ? ` · playId ${e.playId}` : ""}`;
    case "interruption": return `at ${e.current ?? "?"} of ${e.totalDuration ?? "?"} ms`;
    case "silence": return `${e.duration} ms`;
    case "error": return `${e.sender}: ${e.error} (${e.code})`;
    case "hangup": return `${e.reason ?? ""} by ${e.initiator ?? "?"}`;
    case "answer": return "SDP answer applied";
    case "invite": return "SDP offer sent";
    case "tts": return `“${e.text}”`;
    case "play": return e.url;
    case "dtmf": return e.digit;
    default: return "";
  }
}

function logLine(direction, name, text) {
  const li = document.createElement("li");
  li.className = `ev ${direction} ev-${name}`;
  const time = new Date().toLocaleTimeString([], { hour12: false });
  li.innerHTML = `<time></time><b></b><span></span>`;
  li.children[0].textContent = time;
  li.children[1].textContent = direction === "out" ? `→ ${name}` : name;
  li.children[2].textContent = text;
  const list = $("events");
  list.appendChild(li);
  list.scrollTop = list.scrollHeight;
}

function onEvent(e) {
  voxray.events.push(e);
  logLine("in", e.event, summarize(e));
  if (e.event === "answer") applyAnswer(e.sdp);
  if (e.event === "hangup") endCall("ended", e.reason);
}

// -- remote audio level (WebAudio) -----------------------------------------------------

function watchRemote(stream) {
  $("remote").srcObject = stream;  // Chrome feeds WebAudio from a remote stream only while an element plays it
  const ctx = new AudioContext();
  ctx.resume();
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 2048;
  ctx.createMediaStreamSource(stream).connect(analyser);  // not to ctx.destination: no double playback
  voxray.analyser = analyser;
}

function remoteRms() {
  const a = voxray.analyser;
  if (!a) return 0;
  const buf = new Float32Array(a.fftSize);
  a.getFloatTimeDomainData(buf);
  let sum = 0;
  for (const x of buf) sum += x * x;
  return Math.sqrt(sum / buf.length);
}

// Sampled on a timer, not requestAnimationFrame: that stops in background tabs and headless runs.
setInterval(() => {
  const rms = remoteRms();
  voxray.peakRms = Math.max(voxray.peakRms, rms);
  $("meter-bar").style.width = `${Math.min(100, rms * 400)}%`;
}, 50);

// -- the call ----------------------------------------------------------------------------

async function iceServers() {
  try {
    const r = await apiFetch("iceservers");
    return r.ok ? await r.json() : [];
  } catch {
    return [];
  }
}

// The offer goes out in one message (no trickle ICE on this protocol): wait for gathering.
function gatheringDone(pc, timeoutMs = 3000) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, timeoutMs);
  });
}

async function startCall() {
  setState("connecting", "microphone");
  voxray.events.length = 0;
  $("mute").setAttribute("aria-pressed", "false");
  $("mute").textContent = "Mute mic";
  try {
    const mic = await navigator.mediaDevices.getUserMedia({ audio: true });
    const pc = new RTCPeerConnection({ iceServers: await iceServers() });
    voxray.pc = pc;
    mic.getTracks().forEach((t) => pc.addTrack(t, mic));
    pc.ontrack = (ev) => watchRemote(ev.streams[0] ?? new MediaStream([ev.track]));
    pc.oniceconnectionstatechange = () => { $("ice-state").textContent = pc.iceConnectionState; };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed") endCall("failed", "media connection failed");
    };
    setState("connecting", "ICE");
    await pc.setLocalDescription(await pc.createOffer());
    await gatheringDone(pc);
    openSocket(pc.localDescription.sdp);
  } catch (err) {
    logLine("in", "error", String(err));
    endCall("failed", err.name || "error");
  }
}

// The page names the call, so it knows its id before the answer (and finds itself in the call list).
function newCallId() {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return "console-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function openSocket(offer) {
  voxray.callId = newCallId();
  $("call-id").textContent = voxray.callId;
  const ws = new WebSocket(wsUrl(`call/webrtc?id=${voxray.callId}`));
  voxray.ws = ws;
  ws.onopen = () => {
    setState("connecting", "answer");
    sendCommand({ command: "invite", option: { offer, caller: $("caller").value || "console" } });
  };
  ws.onmessage = (m) => { if (typeof m.data === "string") onEvent(JSON.parse(m.data)); };
  ws.onclose = () => { if (voxray.state === "in-call" || voxray.state === "connecting") endCall("ended", "socket closed"); };
}

async function applyAnswer(sdp) {
  try {
    await voxray.pc.setRemoteDescription({ type: "answer", sdp });
    setState("in-call");
    refreshCalls();
  } catch (err) {
    logLine("in", "error", `bad SDP answer: ${err}`);
    hangup("bad answer");
  }
}

function hangup(reason = "console hangup") {
  if (!sendCommand({ command: "hangup", reason, initiator: "caller" })) endCall("ended");
}

function endCall(state, detail) {
  if (voxray.state === "ended" || voxray.state === "failed" || voxray.state === "idle") return;
  setState(state, detail);
  voxray.pc?.getSenders().forEach((s) => s.track?.stop());
  voxray.pc?.close();
  if (voxray.ws && voxray.ws.readyState <= WebSocket.OPEN) voxray.ws.close();
  voxray.pc = null;
  voxray.analyser = null;
  refreshCalls();
}

// -- the call list ----------------------------------------------------------------------

async function refreshCalls() {
  let calls;
  try {
    const r = await apiFetch("call/lists");
    calls = (await r.json()).calls ?? [];
  } catch {
    return;
  }
  const body = $("calls");
  body.replaceChildren();
  if (!calls.length) {
    body.innerHTML = `<tr><td colspan="5" class="muted">none</td></tr>`;
  }
  for (const c of calls) {
    const tr = document.createElement("tr");
    if (c.id === voxray.callId) tr.className = "mine";
    for (const v of [c.id, c.path, c.caller ?? "", (c.answered_at ?? "").slice(11, 19)]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.appendChild(td);
    }
    const kill = document.createElement("button");
    kill.className = "small danger";
    kill.textContent = "Kill";
    kill.onclick = () => apiFetch(`call/kill/${encodeURIComponent(c.id)}`, { method: "POST" }).then(refreshCalls);
    tr.appendChild(document.createElement("td")).appendChild(kill);
    body.appendChild(tr);
  }
  $("calls-updated").textContent = `updated ${new Date().toLocaleTimeString([], { hour12: false })}`;
}

// -- wiring ------------------------------------------------------------------------------

let playSeq = 0;
$("call").onclick = () => { if (voxray.state !== "in-call") { setState("idle"); startCall(); } };
$("hangup").onclick = () => hangup();
$("interrupt").onclick = () => sendCommand({ command: "interrupt" });
// Muting sends silence rather than stopping the track, so the call and its clock go on.
$("mute").onclick = () => {
  const muted = $("mute").getAttribute("aria-pressed") !== "true";
  voxray.pc?.getSenders().forEach((s) => { if (s.track) s.track.enabled = !muted; });
  $("mute").setAttribute("aria-pressed", String(muted));
  $("mute").textContent = muted ? "Unmute mic" : "Mute mic";
};
$("clear").onclick = () => $("events").replaceChildren();
$("tts-form").onsubmit = (ev) => {
  ev.preventDefault();
  const text = $("tts-text").value.trim();
  if (text) sendCommand({ command: "tts", text, playId: `console-${++playSeq}` });
};
$("play-form").onsubmit = (ev) => {
  ev.preventDefault();
  const url = $("play-url").value.trim();
  if (url) sendCommand({ command: "play", url });
};
setState("idle");
refreshCalls();
setInterval(refreshCalls, 3000);
