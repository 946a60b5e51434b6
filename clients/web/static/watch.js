// The audience page: story text as it is written, the ballot with a live tally and
// countdown, voting and reactions, mood and viewers. Everything renders from the
// SDK's RoomState; text is appended to a text node (no re-render, no flicker).
import { REACTIONS } from "/js/fablecast.js";
import { $, connectRoom, connWords, moodWord, REACTION_EMOJI, topReaction } from "/static/common.js";

const { client, state } = connectRoom();
const beatsEl = $("beats");
const storyEl = $("story");
const live = $("live");
let pendingVote = null;

// ---------------------------------------------------------------- story text

/** The <article> of beat `n` (created at the end when missing) and its text node. */
function beatNode(n, choice = null) {
  let art = beatsEl.querySelector(`article[data-beat="${n}"]`);
  if (!art) {
    art = document.createElement("article");
    art.className = "beat";
    art.dataset.beat = String(n);
    if (choice) {
      const c = document.createElement("p");
      c.className = "choice";
      c.textContent = `The audience chose: ${choice}`;
      art.append(c);
    }
    const p = document.createElement("p");
    p.className = "text";
    p.append(document.createTextNode(""));
    art.append(p);
    beatsEl.append(art);
  }
  return { art, text: art.querySelector(".text").firstChild };
}

function nearBottom() {
  return storyEl.scrollHeight - storyEl.scrollTop - storyEl.clientHeight < 48;
}

/** Run `change`, then keep following the text if the reader was at the end. */
function keepingScroll(change) {
  const follow = nearBottom();
  change();
  if (follow) storyEl.scrollTop = storyEl.scrollHeight;
}

function renderAll() {
  keepingScroll(() => {
    beatsEl.replaceChildren();
    for (const b of state.story) beatNode(b.beat, b.choice).text.data = b.text;
    if (state.partial) beatNode(state.partial.beat, state.partial.choice).text.data = state.partial.text;
  });
  speech.reset();
}

// ---------------------------------------------------------------- screen readers
// The polite live region gets whole sentences (or the rest of a beat at its end),
// not every token: a reader hears the story at a pace it can follow.
const speech = {
  buffer: "",
  reset() { this.buffer = ""; },
  add(text) {
    this.buffer += text;
    const m = this.buffer.match(/^([\s\S]*[.!?…]["'”’)\]]?)(\s+)/);
    if (m) {
      this.say(m[1]);
      this.buffer = this.buffer.slice(m[0].length);
    }
  },
  flush() {
    if (this.buffer.trim()) this.say(this.buffer);
    this.buffer = "";
  },
  say(text) { live.textContent = text.trim(); },
};

// ---------------------------------------------------------------- ballot

function renderBallot() {
  const options = $("options");
  const ballot = state.ballot;
  const result = state.result;
  if (!ballot) {
    options.replaceChildren();
    delete options.dataset.window; // a resumed vote brings the same window back
    $("ballot-state").textContent = result
      ? `The audience chose: ${result.text}`
      : "The vote opens when this part of the story ends.";
    $("my-vote").textContent = "";
    return;
  }
  if (options.dataset.window !== String(ballot.window)) {
    options.dataset.window = String(ballot.window);
    options.replaceChildren(...ballot.options.map((opt) => {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "option";
      b.dataset.index = String(opt.index);
      const key = document.createElement("span");
      key.className = "opt-key";
      key.setAttribute("aria-hidden", "true");
      key.textContent = String(opt.index + 1);
      const label = document.createElement("span");
      label.className = "opt-text";
      label.textContent = opt.text;
      const count = document.createElement("span");
      count.className = "opt-count";
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.setAttribute("aria-hidden", "true");
      b.append(bar, key, label, count);
      b.addEventListener("click", () => vote(opt.index));
      return b;
    }));
    pendingVote = null;
    speech.say(`Vote now: ${ballot.options.map((o) => `${o.index + 1}, ${o.text}`).join("; ")}.`);
  }
  renderTally();
  renderCountdown();
}

function renderTally() {
  const ballot = state.ballot;
  if (!ballot) return;
  const counts = state.tally?.counts ?? ballot.options.map(() => 0);
  const total = counts.reduce((a, b) => a + b, 0);
  const vetoed = new Set(ballot.vetoed ?? []);
  for (const b of $("options").querySelectorAll("button.option")) {
    const i = Number(b.dataset.index);
    if (vetoed.has(i)) {
      // A moderator took this option off the ballot: struck out, not votable.
      b.classList.add("vetoed");
      b.disabled = true;
      b.querySelector(".opt-count").textContent = "vetoed";
      b.setAttribute("aria-pressed", "false");
      continue;
    }
    const n = counts[i] ?? 0;
    b.querySelector(".opt-count").textContent = `${n} ${n === 1 ? "vote" : "votes"}`;
    b.querySelector(".bar").style.setProperty("--share", total ? String(n / total) : "0");
    const mine = state.myVote === i;
    b.setAttribute("aria-pressed", String(mine || pendingVote === i));
    b.classList.toggle("pending", pendingVote === i && !mine);
    b.disabled = result_closed();
  }
  const mine = state.myVote;
  $("my-vote").textContent = mine !== null
    ? `Your vote: ${ballot.options[mine]?.text ?? ""}. You can change it until the vote closes.`
    : pendingVote !== null ? "Sending your vote…" : "";
}

function result_closed() {
  return state.result !== null && state.result.window === state.ballot?.window;
}

function renderCountdown() {
  if (!state.ballot || result_closed()) return;
  const s = state.secondsLeft();
  $("ballot-state").textContent = s > 0
    ? `Voting is open: ${s} s left. Press 1–${state.ballot.options.length} or choose below.`
    : "Counting the votes…";
}
setInterval(renderCountdown, 250);

function vote(index) {
  if (!state.ballot || result_closed() || (state.ballot.vetoed ?? []).includes(index)) return;
  pendingVote = index;
  if (!client.vote(state.ballot.window, index)) {
    $("my-vote").textContent = "Not connected: your vote was not sent. Reconnecting…";
    pendingVote = null;
    return;
  }
  renderTally();
}

document.addEventListener("keydown", (e) => {
  if (e.altKey || e.ctrlKey || e.metaKey || e.target instanceof HTMLInputElement) return;
  const n = Number(e.key);
  if (state.ballot && Number.isInteger(n) && n >= 1 && n <= state.ballot.options.length) {
    vote(n - 1);
    e.preventDefault();
  }
});

// ---------------------------------------------------------------- reactions, mood, status

$("reactions").replaceChildren(...REACTIONS.map((r) => {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "reaction";
  b.setAttribute("aria-label", `React: ${r}`);
  const emoji = document.createElement("span");
  emoji.setAttribute("aria-hidden", "true");
  emoji.textContent = REACTION_EMOJI[r] ?? r;
  const word = document.createElement("span");
  word.className = "reaction-word";
  word.setAttribute("aria-hidden", "true");
  word.textContent = r;
  b.append(emoji, word);
  b.addEventListener("click", () => {
    const sent = client.react(r);
    $("react-ack").textContent = sent ? `Sent: ${r}` : "Not connected: not sent";
    b.classList.remove("sent");
    void b.offsetWidth; // restart the feedback animation
    b.classList.add("sent");
  });
  return b;
}));

function renderMood() {
  const top = topReaction(state.mood);
  $("mood").textContent = `mood: ${moodWord(state.mood)}${top ? ` ${REACTION_EMOJI[top] ?? ""}` : ""}`;
  document.body.dataset.mood = moodWord(state.mood);
}

function renderMeta() {
  $("title").textContent = state.title || "Fablecast";
  document.title = `${state.title || "Story"} · Fablecast`;
  $("viewers").textContent = `${state.viewers} watching`;
}

function renderNotice() {
  const n = state.notice();
  const el = $("notice");
  el.hidden = n === null;
  el.textContent = n?.text ?? "";
  el.dataset.kind = n?.kind ?? "";
}

client.addEventListener("status", (e) => {
  $("conn").textContent = connWords(e.detail);
  document.body.dataset.conn = e.detail.state;
});

client.addEventListener("error", (e) => {
  const { code, message } = e.detail;
  if (code === "rate_limited") $("react-ack").textContent = "Slow down a little: that one was not counted.";
  else if (["window_closed", "not_in_phase", "unknown_option"].includes(code)) {
    pendingVote = null;
    $("my-vote").textContent = `Your vote was not counted: ${message}`;
  }
});

client.addEventListener("message", (e) => {
  const msg = e.detail;
  const change = state.apply(msg);
  switch (change) {
    case "reset":
      renderAll(); renderBallot(); renderMood(); renderMeta(); break;
    case "beat_start":
      keepingScroll(() => beatNode(msg.beat, msg.choice ?? null));
      speech.reset();
      break;
    case "text":
      keepingScroll(() => { beatNode(msg.beat).text.appendData(msg.text); });
      speech.add(msg.text);
      break;
    case "beat_end": {
      const node = beatNode(msg.beat).text;
      if (node.data.trim() !== msg.text) node.data = msg.text;
      speech.flush();
      break;
    }
    case "beat_abort":
      beatNode(msg.beat).text.data = "";
      speech.reset();
      break;
    case "ballot": case "vote_result": case "phase":
      renderBallot(); break;
    case "tally": case "my_vote":
      if (change === "my_vote") pendingVote = null;
      renderTally(); break;
    case "mood": renderMood(); break;
    case "presence": renderMeta(); break;
    default: break;
  }
  renderNotice();
});

client.connect();
