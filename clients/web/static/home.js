// The home page: the node's rooms (GET /api/rooms) with links into each page.
import { $, moodWord, REACTION_EMOJI } from "/static/common.js";

const PHASES = { narrating: "narrating", voting: "voting now", resolving: "counting votes", paused: "paused" };

function roomCard(r) {
  const li = document.createElement("li");
  li.className = "room";
  li.dataset.room = r.name;
  const h = document.createElement("h3");
  h.textContent = r.title;
  const meta = document.createElement("p");
  const phase = r.phase === "paused" && r.reason === "empty" ? "waiting for viewers" : PHASES[r.phase] ?? r.phase;
  meta.textContent = `${r.audience} watching · ${phase}${r.beat > 0 ? ` · beat ${r.beat}` : ""}`;
  const mood = document.createElement("p");
  mood.textContent = `Mood: ${moodWord(r.mood)}${r.mood.top ? ` ${REACTION_EMOJI[r.mood.top] ?? ""}` : ""}`;
  const links = document.createElement("p");
  links.className = "links";
  for (const [kind, label, cls] of [["watch", "Watch", "primary"], ["overlay", "Overlay", ""], ["vr", "VR", ""]]) {
    const a = document.createElement("a");
    a.href = `/${kind}/${encodeURIComponent(r.name)}`;
    a.textContent = label;
    a.setAttribute("aria-label", `${label}: ${r.title}`);
    if (cls) a.className = cls;
    links.append(a);
  }
  li.append(h, meta, mood, links);
  return li;
}

async function refresh() {
  try {
    const res = await fetch("/api/rooms", { cache: "no-store" });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const { rooms } = await res.json();
    $("rooms").replaceChildren(...rooms.map(roomCard));
    const words = rooms.length ? `${rooms.length} ${rooms.length === 1 ? "room" : "rooms"} open.` : "No rooms are open on this node.";
    if ($("rooms-status").textContent !== words) $("rooms-status").textContent = words;
  } catch (err) {
    $("rooms-status").textContent = `Could not load the rooms (${err.message}); retrying.`;
  }
}

refresh();
setInterval(refresh, 5000);
