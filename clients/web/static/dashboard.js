// The moderator dashboard (/dashboard): the node's rooms and health, and for the
// selected room its live text, ballot (veto, close), hold queue (approve, edit,
// reject), pause/resume/kill, plot events, mute/ban, the why of each beat and the
// audit log. Every action is a `moderate` message on the room's own connection,
// made with the moderator's token; the server authorizes each one (a viewer's
// token gets "forbidden" and changes nothing), so this page holds no secret but
// the token, kept in sessionStorage (or given once as #token=... in the URL).
import { FablecastClient, RoomState, roomUrl } from "/js/fablecast.js";
import { Moderator } from "/js/moderation.js";
import { $, connWords, moodWord } from "/static/common.js";

const TOKEN_KEY = "fablecast.moderator-token";
let token = readToken();
let current = null; // {name, client, state, mod}
const whys = new Map(); // beat -> why record (when the story engine sends one)

function readToken() {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    const t = decodeURIComponent(m[1]);
    try { sessionStorage.setItem(TOKEN_KEY, t); } catch { /* private mode */ }
    history.replaceState(null, "", location.pathname + location.search);
    return t;
  }
  try { return sessionStorage.getItem(TOKEN_KEY); } catch { return null; }
}

$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  token = $("token").value.trim();
  try { sessionStorage.setItem(TOKEN_KEY, token); } catch { /* private mode */ }
  $("denied").hidden = true;
  if (current) select(current.name);
});

// ---------------------------------------------------------------- node: rooms and health

async function refreshNode() {
  try {
    const ready = await fetch("/readyz", { cache: "no-store" });
    const body = await ready.json();
    $("health").textContent = body.ready
      ? `engine ${body.engine} (${body.model ?? "no model"}) ready`
      : `engine not ready: ${body.detail ?? "warming up"}`;
  } catch {
    $("health").textContent = "node unreachable";
  }
  try {
    const res = await fetch("/api/rooms", { cache: "no-store" });
    renderRooms((await res.json()).rooms);
  } catch { /* keep the last list */ }
}

function renderRooms(rooms) {
  const body = $("rooms").tBodies[0];
  body.replaceChildren();
  for (const r of rooms) {
    const tr = document.createElement("tr");
    tr.dataset.room = r.name;
    if (current?.name === r.name) tr.className = "selected";
    const cells = [
      null,
      String(r.audience),
      r.reason ? `${r.phase} (${r.reason})` : r.phase,
      String(r.beat),
      `${moodWord(r.mood)}${r.mood.top ? ` · ${r.mood.top}` : ""}`,
      r.narrator,
    ];
    for (const text of cells) {
      const td = document.createElement("td");
      if (text === null) {
        const b = document.createElement("button");
        b.type = "button";
        b.textContent = r.title ? `${r.name} — ${r.title}` : r.name;
        b.addEventListener("click", () => select(r.name));
        td.append(b);
      } else {
        td.textContent = text;
      }
      tr.append(td);
    }
    body.append(tr);
  }
}

// ---------------------------------------------------------------- one room

function select(name) {
  if (current) current.client.close();
  whys.clear();
  const client = new FablecastClient(roomUrl(name), {
    token: () => token,
    participant: undefined,
  });
  const state = new RoomState();
  const mod = new Moderator(client);
  current = { name, client, state, mod };
  globalThis.fablecast = { client, state, mod, room: name }; // tests reach it here
  $("room").hidden = false;
  $("room-h").textContent = `Room ${name}`;
  client.addEventListener("status", (e) => { $("conn").textContent = `${name}: ${connWords(e.detail)}`; });
  client.addEventListener("message", (e) => {
    const msg = e.detail;
    const change = state.apply(msg);
    if (msg.type === "why" && typeof msg.beat === "number") {
      whys.set(msg.beat, msg);
      renderWhys();
    }
    if (change) renderRoom();
  });
  mod.addEventListener("state", () => renderMod());
  mod.addEventListener("denied", (e) => {
    const d = $("denied");
    d.textContent = `This token may not moderate ${name}: ${e.detail.message}`;
    d.hidden = false;
  });
  client.connect();
  refreshNode();
}

function renderRoom() {
  const s = current.state;
  $("room-status").textContent = `${s.phase ?? "?"}${s.phaseReason ? ` (${s.phaseReason})` : ""} · beat ${s.beat} · ${s.viewers} watching · narrator ${s.narrator}`;
  const text = s.partial ? s.partial.text : (s.story.at(-1)?.text ?? "");
  $("live-text").textContent = text;
  renderBallot();
  renderWhys();
}

function renderBallot() {
  const box = $("ballot");
  const ballot = current.state.ballot;
  box.replaceChildren();
  if (!ballot) {
    const p = document.createElement("p");
    p.className = "meta";
    p.textContent = "No vote open.";
    box.append(p);
    return;
  }
  const vetoed = new Set(ballot.vetoed ?? []);
  const counts = current.state.tally?.counts ?? [];
  for (const o of ballot.options) {
    const row = document.createElement("div");
    row.className = vetoed.has(o.index) ? "opt vetoed" : "opt";
    const label = document.createElement("span");
    label.textContent = `${o.index + 1}. ${o.text} (${counts[o.index] ?? 0})`;
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = "Veto";
    b.dataset.option = String(o.index);
    b.disabled = vetoed.has(o.index);
    b.addEventListener("click", () => act("veto", { window: ballot.window, option: o.index }));
    row.append(label, b);
    box.append(row);
  }
}

function renderMod() {
  const st = current.mod.state;
  $("approval").checked = st.approval;
  $("muted").textContent = st.muted.join(", ") || "none";
  $("banned").textContent = st.banned.join(", ") || "none";
  $("filter").textContent = st.filter;
  $("pending-inject").textContent = st.inject ? `Next beat will include: ${st.inject}` : "";
  const holds = $("holds");
  holds.replaceChildren();
  for (const h of st.holds) {
    const li = document.createElement("li");
    li.dataset.hold = String(h.hold);
    const reason = document.createElement("p");
    reason.className = "hold-reason";
    reason.textContent = `Beat ${h.beat}${h.choice ? ` (chose: ${h.choice})` : ""} — held: ${h.reason}`;
    const area = document.createElement("textarea");
    area.value = h.text;
    area.setAttribute("aria-label", `Text of held beat ${h.beat}`);
    const buttons = document.createElement("div");
    buttons.className = "controls";
    for (const [label, action] of [["Approve", "approve"], ["Approve edited", "edit"], ["Reject", "reject"]]) {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = label;
      b.dataset.action = action;
      b.addEventListener("click", () => act(action, action === "edit" ? { hold: h.hold, text: area.value } : { hold: h.hold }));
      buttons.append(b);
    }
    li.append(reason, area, buttons);
    holds.append(li);
  }
  $("no-holds").hidden = st.holds.length > 0;
  const audit = $("audit");
  audit.replaceChildren();
  for (const a of [...st.audit].reverse()) {
    const li = document.createElement("li");
    li.textContent = `${new Date(a.t_ms).toLocaleTimeString()} ${a.subject} (${a.role}) ${a.action}: ${a.outcome}${a.detail ? ` — ${a.detail}` : ""}`;
    audit.append(li);
  }
}

function renderWhys() {
  const list = $("whys");
  list.replaceChildren();
  for (const [beat, why] of [...whys.entries()].sort((a, b) => a[0] - b[0])) {
    const li = document.createElement("li");
    li.textContent = `Beat ${beat}: ${describeWhy(why)}`;
    list.append(li);
  }
  if (!whys.size) {
    const li = document.createElement("li");
    li.className = "meta";
    li.textContent = "No why records yet (the story engine sends one per beat when it has one).";
    list.append(li);
  }
}

/** A `why` frame (the story engine's record of a beat) in words. */
function describeWhy(why) {
  if (typeof why !== "object" || why === null) return String(why);
  const parts = [];
  if (why.choice) {
    const counts = (why.counts ?? []).join("/");
    parts.push(`chose "${why.choice}" (${counts || "no"} votes, ${why.voters ?? 0} voters${why.tie_break ? `, ${why.tie_break}` : ""})`);
  } else {
    parts.push("opening beat");
  }
  if (why.tone || why.directive) parts.push(`tone: ${why.tone ?? ""} ${why.directive ?? ""}`.trim());
  if (why.state?.summary) parts.push(`state: ${why.state.summary}`);
  if (why.lore?.length) parts.push(`lore: ${why.lore.join("; ")}`);
  return parts.join(" · ");
}

async function act(action, fields = {}) {
  if (!current) return;
  const answer = await current.mod.act(action, fields);
  const el = $("answer");
  el.className = answer.ok ? "answer" : "answer refused";
  el.textContent = answer.ok ? `${action}: ${answer.detail}` : `${action} refused (${answer.code}): ${answer.message}`;
}

$("pause").addEventListener("click", () => act("pause"));
$("resume").addEventListener("click", () => act("resume"));
$("close-vote").addEventListener("click", () => act("close_vote"));
$("kill").addEventListener("click", () => act("kill"));
$("approval").addEventListener("change", (e) => act("approval", { on: e.target.checked }));
$("inject-form").addEventListener("submit", (e) => {
  e.preventDefault();
  act("inject", { text: $("inject").value });
  $("inject").value = "";
});
$("who-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const action = e.submitter?.value ?? "mute";
  act(action, { participant: $("who").value });
});

const params = new URLSearchParams(location.search);
refreshNode();
setInterval(refreshNode, 2000);
if (params.get("room")) select(params.get("room"));
