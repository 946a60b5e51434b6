// OBS overlay: transparent; what to show, size and theme come from the URL.
//   ?show=text,ballot,tally,mood,cues   (default text,ballot,tally)
//   &scale=1.25   font scale (1 = 34 px text, readable in a 1080p stream)
//   &theme=dark|light   light text on dark video (default) or dark on light
//   &position=bottom|top   &lines=4   lines of text kept before old ones fade
import { $, connectRoom, moodWord, REACTION_EMOJI, topReaction } from "/static/common.js";

const { client, state, params } = connectRoom({ storage: false });
const show = new Set((params.get("show") ?? "text,ballot,tally").split(",").map((s) => s.trim()));
const root = document.documentElement;
const scale = Number(params.get("scale"));
if (scale > 0 && scale < 10) root.style.setProperty("--ov-scale", String(scale));
if (params.get("theme") === "light") root.dataset.theme = "light";
if (params.get("position") === "top") root.dataset.position = "top";
const lines = Math.min(12, Math.max(1, Number(params.get("lines")) || 4));
$("ov-text").style.maxHeight = `calc(${lines} * 1.35em)`;
$("ov-text").hidden = !show.has("text");

// Text: one <p> per beat; earlier beats dim, then fade out and are removed, so text
// never piles up and the box never scrolls.
const textEl = $("ov-text");
function line(beat) {
  let p = textEl.querySelector(`p[data-beat="${beat}"]`);
  if (!p) {
    for (const old of textEl.querySelectorAll("p.ov-line:not(.old)")) old.classList.add("old");
    p = document.createElement("p");
    p.className = "ov-line";
    p.dataset.beat = String(beat);
    p.append(document.createTextNode(""));
    textEl.append(p);
    const olds = [...textEl.querySelectorAll("p.old:not(.gone)")];
    for (const o of olds.slice(0, Math.max(0, olds.length - 1))) fadeOut(o);
    setTimeout(() => { if (p.nextSibling) fadeOut(p); }, 60_000);
  }
  return p.firstChild;
}
function fadeOut(p) {
  p.classList.add("gone");
  setTimeout(() => p.remove(), 1300);
}

function renderBallot() {
  const el = $("ov-ballot");
  const ballot = state.ballot;
  el.hidden = !show.has("ballot") || !ballot;
  if (!ballot) return;
  const counts = state.tally?.counts ?? [];
  const total = counts.reduce((a, b) => a + b, 0);
  const h = document.createElement("h2");
  const left = state.secondsLeft();
  h.textContent = state.result ? `Chosen: ${state.result.text}` : `Vote now${left ? ` · ${left} s` : ""}`;
  el.replaceChildren(h, ...ballot.options.map((o) => {
    const row = document.createElement("div");
    row.className = "ov-opt";
    const k = document.createElement("span");
    k.textContent = `${o.index + 1}.`;
    const t = document.createElement("span");
    t.textContent = o.text;
    const n = document.createElement("span");
    n.className = "ov-n";
    n.textContent = show.has("tally") ? String(counts[o.index] ?? 0) : "";
    row.append(k, t, n);
    if (show.has("tally")) {
      const bar = document.createElement("span");
      bar.className = "ov-bar";
      bar.style.setProperty("--share", total ? String((counts[o.index] ?? 0) / total) : "0");
      row.append(bar);
    }
    return row;
  }));
}
setInterval(() => { if (state.ballot && !state.result) renderBallot(); }, 1000);

function renderMood() {
  const el = $("ov-mood");
  el.hidden = !show.has("mood");
  if (el.hidden) return;
  const top = topReaction(state.mood);
  const meter = document.createElement("span");
  meter.className = "ov-meter";
  const fill = document.createElement("span");
  fill.style.setProperty("--level", String(Math.min(1, (state.mood?.intensity ?? 0) / 20)));
  meter.append(fill);
  el.replaceChildren(`Mood: ${moodWord(state.mood)} ${top ? REACTION_EMOJI[top] ?? "" : ""}`, meter);
}

function renderCue() {
  const el = $("ov-cue");
  const c = state.cue;
  el.hidden = !show.has("cues") || !c;
  if (!c) return;
  el.textContent = [c.location, c.time_of_day, c.weather, c.music && `♪ ${c.music}`].filter(Boolean).join(" · ");
}

client.addEventListener("message", (e) => {
  const msg = e.detail;
  switch (state.apply(msg)) {
    case "reset":
      textEl.replaceChildren();
      if (state.partial?.text) line(state.partial.beat).data = state.partial.text;
      else if (state.story.length) line(state.story.at(-1).beat).data = state.story.at(-1).text;
      renderBallot(); renderMood(); renderCue();
      break;
    case "beat_start": line(msg.beat); break;
    case "text": line(msg.beat).appendData(msg.text); break;
    case "beat_end": { const t = line(msg.beat); if (t.data.trim() !== msg.text) t.data = msg.text; break; }
    case "beat_abort": line(msg.beat).data = ""; break;
    case "ballot": case "tally": case "vote_result": case "phase": renderBallot(); break;
    case "mood": renderMood(); break;
    case "cue": renderCue(); break;
    default: break;
  }
});
client.connect();
