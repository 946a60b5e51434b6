// Fablecast protocol v1 client: one ES module for browsers and Node (>= 20), no build step.
//
//   import { FablecastClient, RoomState } from "/js/fablecast.js";
//   const client = new FablecastClient("ws://host:8765/rooms/demo", { storage: localStorage });
//   const room = new RoomState();
//   client.addEventListener("message", (e) => room.apply(e.detail));
//   client.connect();
//
// What it guarantees (docs/protocol.md, "Session"):
// - Every room frame is delivered once and in order: `seq` is tracked before the
//   `type` is looked at (unknown types count too); a frame already seen is dropped;
//   a gap closes the socket and resumes.
// - Reconnects use full-jitter exponential backoff and resume with
//   `hello {epoch, since}`; `welcome.recovered === false` is followed by a snapshot
//   (a "reset": drop local state and rebuild from it), never a silent gap.
// - The participant identity is kept across reconnects (and across page loads when
//   a `storage` is given), so a vote counts once.
// - Close codes that say "do not reconnect" (1009, 4001, 4003, 4004, 4011, 4403) stop it.
//
// Events (an EventTarget; `event.detail` is the message):
//   "message"  every server message, after seq bookkeeping (room frames, welcome, snapshot, ...)
//   "<type>"   the same message under its own type ("token", "ballot", "cue", ...)
//   "reset"    a snapshot replaced the room state (fresh join or resync)
//   "status"   connection state changed: detail = {state, attempt, code, reason, delayMs}
//
// Auth (issue 12 adds signed tokens and a server-issued identity): the `token`
// option (a string, or a function returning one or a promise of one, called on
// every connect) goes in `hello.token`; without it, the identity the server issued
// (`welcome.identity`) goes back as `hello.token`. `rememberIdentity()` is the one
// place that stores what the server says this client is; `identity()` is what goes back.
//
/** @typedef {import("./protocol.d.ts").ServerMessage} ServerMessage */
/** @typedef {import("./protocol.d.ts").ClientMessage} ClientMessage */
/** @typedef {import("./protocol.d.ts").Snapshot} Snapshot */
/** @typedef {import("./protocol.d.ts").Welcome} Welcome */
/** @typedef {import("./protocol.d.ts").Ballot} Ballot */
/** @typedef {import("./protocol.d.ts").Tally} Tally */
/** @typedef {import("./protocol.d.ts").Mood} Mood */

export const PROTOCOL = 1;
export const SUBPROTOCOLS = Object.freeze({ json: "fablecast.v1.json", msgpack: "fablecast.v1.msgpack" });
export const REACTIONS = Object.freeze(["joy", "laugh", "love", "surprise", "fear", "anger", "sad", "bored"]);

/** Close codes after which reconnecting cannot help (docs/protocol.md, "Close codes"). */
export const FINAL_CLOSE_CODES = new Set([1009, 4001, 4003, 4004, 4011, 4401, 4403]);
/** The token in hello was refused (close 4401). */
const UNAUTHORIZED = 4401;
/** Close codes that ask for a longer wait before coming back. */
const BACK_OFF_LONGER = new Set([4009, 4029]);

const ROOM_FRAME_TYPES = new Set([
  "beat_start", "token", "beat_end", "beat_abort", "ballot", "tally", "vote_result",
  "mood", "presence", "phase", "narrator",
]);

const STORAGE_KEY = "fablecast.identity";
// The packaged MessagePack codec, found beside this module wherever it is served
// from (Node: the file tree; browsers: the node's /js/ route serves the same tree).
const MSGPACK_URL = "./node_modules/@msgpack/msgpack/dist.esm/index.mjs";

/** The ws:// or wss:// URL of `room` on the node that served `location`. */
export function roomUrl(room, location = globalThis.location) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/rooms/${encodeURIComponent(room)}`;
}

/**
 * Full-jitter exponential backoff: a random delay in [0, min(maxMs, baseMs * 2^attempt)].
 * @param {number} attempt 0 for the first retry
 */
export function backoffDelay(attempt, baseMs = 250, maxMs = 10_000, random = Math.random) {
  return Math.round(random() * Math.min(maxMs, baseMs * 2 ** Math.min(attempt, 20)));
}

/** A protocol v1 connection to one room, with reconnect and resume. */
export class FablecastClient extends EventTarget {
  /**
   * @param {string} url ws://host:port/rooms/<room>
   * @param {object} [options]
   * @param {"json"|"msgpack"} [options.codec] wire encoding (default "json")
   * @param {string} [options.participant] identity to vote under (default: stored, else server-assigned)
   * @param {string} [options.name] display name sent in hello
   * @param {string|(() => string|null|Promise<string|null>)} [options.token] signed token for hello.token
   * @param {{getItem(k: string): string|null, setItem(k: string, v: string): void}} [options.storage]
   *        where the identity survives page loads (e.g. localStorage); none: kept in memory
   * @param {boolean} [options.resume] resume after reconnects (default true)
   * @param {number} [options.backoffBaseMs] first retry's upper bound (default 250)
   * @param {number} [options.backoffMaxMs] cap of the backoff (default 10000)
   * @param {typeof WebSocket} [options.WebSocket] constructor (default globalThis.WebSocket)
   * @param {{encode(v: unknown): Uint8Array, decode(b: Uint8Array): unknown}} [options.msgpack]
   *        MessagePack codec (default: @msgpack/msgpack, loaded on first use)
   */
  constructor(url, options = {}) {
    super();
    this.url = url;
    this.codec = options.codec ?? "json";
    if (!(this.codec in SUBPROTOCOLS)) throw new TypeError(`unknown codec ${this.codec}`);
    this.options = options;
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this.storage = options.storage ?? null;
    const stored = this._load();
    /** The identity votes are counted under; null until the first welcome when none is stored. */
    this.participant = options.participant ?? stored.participant ?? null;
    /** The server-issued identity (welcome.identity), kept in memory even without a storage. */
    this._issued = stored.token ?? null;
    /** Room epoch and last room frame seq processed (resume point). */
    this.epoch = null;
    this.seq = null;
    /** "idle" | "connecting" | "open" | "reconnecting" | "closed" */
    this.state = "idle";
    this.attempt = 0;
    /** @type {Welcome|null} */
    this.welcome = null;
    /** Set when the server said not to come back: {code, reason}. */
    this.finalClose = null;
    this._ws = null;
    this._timer = null;
    this._stopped = false;
    this._msgpack = options.msgpack ?? null;
    this._nonce = 0;
    this._forgot = false;
  }

  // ------------------------------------------------------------------ identity

  _load() {
    try {
      const raw = this.storage?.getItem(STORAGE_KEY);
      return raw ? JSON.parse(raw) : {};
    } catch {
      return {};
    }
  }

  /** What this client sends back to say who it is (hello.participant; hello.token). */
  async identity() {
    const t = this.options.token;
    const token = typeof t === "function" ? await t() : t ?? this._issued ?? this._load().token ?? null;
    return { participant: this.participant, token };
  }

  /**
   * Keep what the server says this client is, for every later connect (and page
   * load, with a storage). The one place to extend when the server issues more
   * (a signed anonymous identity in `welcome.identity`, sent back as `hello.token`).
   * @param {Welcome & {identity?: string|null}} welcome
   */
  rememberIdentity(welcome) {
    this.participant = welcome.participant;
    const saved = { participant: welcome.participant };
    const previous = this._load().token;
    const token = typeof welcome.identity === "string" ? welcome.identity : previous ?? this._issued;
    if (typeof token === "string") saved.token = this._issued = token;
    try {
      this.storage?.setItem(STORAGE_KEY, JSON.stringify(saved));
    } catch {
      /* storage full or forbidden: the identity lives for this page only */
    }
  }

  /** Drop the stored identity (participant and token): the next join gets a fresh one. */
  forgetIdentity() {
    this.participant = this.options.participant ?? null;
    this._issued = null;
    try {
      this.storage?.setItem(STORAGE_KEY, JSON.stringify({}));
    } catch {
      /* nothing stored */
    }
  }

  // ------------------------------------------------------------------ lifecycle

  /** Open the connection (and keep it open until `close()`). Returns when the first socket is created. */
  async connect() {
    this._stopped = false;
    this.finalClose = null;
    if (this.codec === "msgpack" && !this._msgpack) {
      this._msgpack = await import(new URL(MSGPACK_URL, import.meta.url).href);
    }
    await this._open();
  }

  /** Close for good (no reconnect). */
  close(code = 1000, reason = "") {
    this._stopped = true;
    clearTimeout(this._timer);
    this._timer = null;
    const ws = this._ws;
    this._ws = null;
    if (ws && ws.readyState <= 1) ws.close(code, reason);
    this._setState("closed", {});
  }

  /**
   * Drop the socket as a network failure would (no close handshake seen by the
   * page's logic): the client reconnects and resumes. For tests and "retry now".
   */
  drop() {
    const ws = this._ws;
    if (!ws) return;
    this._detach(ws);
    try {
      ws.close(4000, "client dropped");
    } catch {
      /* already closing */
    }
    this._scheduleReconnect({ code: 1006, reason: "dropped" }, 0);
  }

  async _open() {
    clearTimeout(this._timer);
    this._timer = null;
    if (this._stopped) return;
    this._setState(this.attempt ? "reconnecting" : "connecting", {});
    const ident = await this.identity();
    if (this._stopped) return;
    let ws;
    try {
      ws = new this.WebSocket(this.url, [SUBPROTOCOLS[this.codec]]);
    } catch (err) {
      this._scheduleReconnect({ code: 1006, reason: String(err) });
      return;
    }
    ws.binaryType = "arraybuffer";
    this._ws = ws;
    ws.onopen = () => {
      const hello = { type: "hello" };
      if (ident.participant) hello.participant = ident.participant;
      if (this.options.name) hello.name = this.options.name;
      if (ident.token) hello.token = ident.token;
      if (this.options.resume !== false && this.epoch !== null && this.seq !== null) {
        hello.epoch = this.epoch;
        hello.since = this.seq;
      }
      this._send(hello);
    };
    ws.onmessage = (ev) => this._receive(ev.data);
    ws.onclose = (ev) => {
      if (this._ws !== ws) return;
      this._detach(ws);
      if (ev.code === UNAUTHORIZED && !this.options.token && this._load().token && !this._forgot) {
        // A stored anonymous identity was refused (expired, key rotated): forget it and
        // join once more without one (docs/protocol.md); an operator token is final.
        this.forgetIdentity();
        this._forgot = true;
        this._scheduleReconnect({ code: ev.code, reason: ev.reason }, 0);
        return;
      }
      if (FINAL_CLOSE_CODES.has(ev.code)) {
        this.finalClose = { code: ev.code, reason: ev.reason };
        this._stopped = true;
        this._setState("closed", { code: ev.code, reason: ev.reason });
        return;
      }
      const slow = BACK_OFF_LONGER.has(ev.code) ? 4 : 0;
      this._scheduleReconnect({ code: ev.code, reason: ev.reason }, undefined, slow);
    };
    ws.onerror = () => {
      /* onclose follows and decides */
    };
  }

  _detach(ws) {
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    if (this._ws === ws) this._ws = null;
  }

  _scheduleReconnect(info, delayMs, extraAttempts = 0) {
    if (this._stopped) return;
    const base = this.options.backoffBaseMs ?? 250;
    const max = this.options.backoffMaxMs ?? 10_000;
    const delay = delayMs ?? backoffDelay(this.attempt + extraAttempts, base, max);
    this.attempt += 1;
    this._setState("reconnecting", { ...info, delayMs: delay });
    clearTimeout(this._timer);
    this._timer = setTimeout(() => this._open(), delay);
  }

  _setState(state, info) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("status", { detail: { state, attempt: this.attempt, ...info } }));
  }

  // ------------------------------------------------------------------ sending

  _send(msg) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) return false;
    ws.send(this.codec === "json" ? JSON.stringify(msg) : this._msgpack.encode(msg));
    return true;
  }

  /** Vote for `option` in `window`; false when not connected (nothing was sent). */
  vote(window, option) {
    return this._send({ type: "vote", window, option });
  }

  /**
   * Send an emotion: a reaction name, or `{valence, arousal}` in [-1, 1], or both.
   * @param {string|{reaction?: string, valence?: number, arousal?: number}} what
   */
  react(what) {
    const body = typeof what === "string" ? { reaction: what } : what;
    return this._send({ type: "react", ...body });
  }

  /** Send a ping; the answer is a "pong" event with the same nonce. Returns the nonce. */
  ping() {
    this._nonce += 1;
    this._send({ type: "ping", nonce: this._nonce });
    return this._nonce;
  }

  // ------------------------------------------------------------------ receiving

  _decode(data) {
    if (typeof data === "string") return JSON.parse(data);
    const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : data;
    return this._msgpack.decode(bytes);
  }

  _receive(data) {
    let msg;
    try {
      msg = this._decode(data);
    } catch {
      return; // not ours to fix: the server never sends undecodable frames
    }
    if (!msg || typeof msg !== "object") return;
    const roomFrame = typeof msg.seq === "number" && typeof msg.epoch === "string"
      && msg.type !== "snapshot" && msg.type !== "welcome";
    if (roomFrame || (msg.type !== undefined && ROOM_FRAME_TYPES.has(msg.type))) {
      // Resume bookkeeping comes before dispatch on type: unknown room frames count too.
      if (this.seq !== null && msg.epoch === this.epoch) {
        if (msg.seq <= this.seq) return; // already seen (cannot happen on one socket; kept cheap)
        if (msg.seq !== this.seq + 1) {
          // A gap: never show a hole. Reconnect and resume from what we have.
          this.drop();
          return;
        }
      }
      this.epoch = msg.epoch;
      this.seq = msg.seq;
    } else if (msg.type === "welcome") {
      this.welcome = msg;
      this.attempt = 0;
      this._forgot = false;
      this.rememberIdentity(msg);
      if (msg.recovered !== true) {
        // A snapshot follows and sets the resume point.
        this.epoch = msg.epoch;
        this.seq = null;
      }
      this._setState("open", { recovered: msg.recovered });
    } else if (msg.type === "snapshot") {
      this.epoch = msg.epoch;
      this.seq = msg.seq;
    }
    this.dispatchEvent(new CustomEvent("message", { detail: msg }));
    if (typeof msg.type === "string") this.dispatchEvent(new CustomEvent(msg.type, { detail: msg }));
    if (msg.type === "snapshot") this.dispatchEvent(new CustomEvent("reset", { detail: msg }));
  }
}

/**
 * The room as the client sees it, folded from server messages (pure: no I/O).
 *
 * `apply(msg)` returns what changed, so a page can update only that part:
 * "reset" (snapshot: re-render everything), "text" (detail: {beat, text} appended),
 * "beat_start", "beat_end", "beat_abort", "ballot", "tally", "vote_result", "mood",
 * "presence", "phase", "narrator", "cue", "my_vote", or null.
 */
export class RoomState {
  constructor() {
    this.title = "";
    /** Committed beats, oldest first: {beat, text, choice}. */
    this.story = [];
    this.truncated = false;
    /** The beat being narrated: {beat, text, choice} or null. */
    this.partial = null;
    this.phase = null;
    this.phaseReason = null;
    this.beat = 0;
    /** @type {Ballot|null} */
    this.ballot = null;
    /** Local time (ms, performance clock) when the open ballot closes. */
    this.ballotClosesAt = null;
    /** @type {Tally|null} */
    this.tally = null;
    /** @type {import("./protocol.d.ts").VoteResult|null} */
    this.result = null;
    /** @type {Mood|null} */
    this.mood = null;
    this.viewers = 0;
    this.narrator = "ok";
    this.narratorMessage = null;
    this.myVote = null;
    /** The latest scene cue (location, time_of_day, weather, lighting, music, characters, image_prompt). */
    this.cue = null;
    /** Whether any text has been narrated in this room yet (from the snapshot or live). */
    this.hasText = false;
    this.now = () => (globalThis.performance ? performance.now() : Date.now());
  }

  /** Fold one server message in; returns the kind of change (see the class doc). */
  apply(msg) {
    switch (msg.type) {
      case "snapshot": {
        this.title = msg.title;
        this.story = msg.story.map((b) => ({ beat: b.beat, text: b.text, choice: b.choice ?? null }));
        this.truncated = msg.truncated;
        this.phase = msg.phase;
        this.phaseReason = msg.reason ?? null;
        this.beat = msg.beat;
        this.partial = msg.partial || msg.phase === "narrating"
          ? { beat: msg.beat, text: msg.partial ?? "", choice: null }
          : null;
        if (this.partial && this.story.some((b) => b.beat === this.partial.beat)) this.partial = null;
        this._setBallot(msg.ballot);
        this.tally = msg.tally;
        this.result = null;
        this.mood = msg.mood;
        this.viewers = msg.viewers;
        this.narrator = msg.narrator;
        this.myVote = msg.my_vote ?? null;
        this.hasText = this.story.length > 0 || Boolean(msg.partial);
        if (msg.cue) this.cue = msg.cue;
        return "reset";
      }
      case "beat_start":
        this.beat = msg.beat;
        this.partial = { beat: msg.beat, text: "", choice: msg.choice ?? null };
        return "beat_start";
      case "token":
        if (!this.partial || this.partial.beat !== msg.beat) {
          this.partial = { beat: msg.beat, text: "", choice: null };
        }
        this.partial.text += msg.text;
        this.hasText = true;
        return "text";
      case "beat_end": {
        const choice = this.partial?.beat === msg.beat ? this.partial.choice : null;
        this.story = this.story.filter((b) => b.beat !== msg.beat);
        this.story.push({ beat: msg.beat, text: msg.text, choice });
        this.partial = null;
        this.hasText = true;
        return "beat_end";
      }
      case "beat_abort":
        if (this.partial?.beat === msg.beat) this.partial.text = "";
        return "beat_abort";
      case "ballot": {
        // The same window again: a moderator vetoed an option (or resumed a paused
        // vote). Counts and my vote stand, unless my vote was for a vetoed option.
        const again = this.ballot !== null && this.ballot.window === msg.window;
        this._setBallot(msg);
        if (!again) this.tally = null;
        this.result = null;
        if (!again || (msg.vetoed ?? []).includes(this.myVote)) this.myVote = null;
        return "ballot";
      }
      case "tally":
        if (this.ballot && msg.window === this.ballot.window) this.tally = msg;
        return "tally";
      case "vote_result":
        this.result = msg;
        this.ballotClosesAt = null;
        return "vote_result";
      case "mood":
        this.mood = msg;
        return "mood";
      case "presence":
        this.viewers = msg.viewers;
        return "presence";
      case "phase":
        this.phase = msg.phase;
        this.phaseReason = msg.reason ?? null;
        this.beat = msg.beat;
        if (msg.phase === "narrating") this.result = null;
        if (msg.phase === "narrating" || msg.phase === "paused") {
          this.ballot = null;
          this.ballotClosesAt = null;
          this.tally = null;
        }
        return "phase";
      case "narrator":
        this.narrator = msg.state;
        this.narratorMessage = msg.message ?? null;
        return "narrator";
      case "vote_ack":
        if (this.ballot && msg.window === this.ballot.window) this.myVote = msg.option;
        return "my_vote";
      case "cue":
        this.cue = { ...(this.cue ?? {}), ...msg };
        return "cue";
      default:
        return null;
    }
  }

  _setBallot(ballot) {
    this.ballot = ballot;
    this.ballotClosesAt = ballot ? this.now() + ballot.duration_ms : null;
  }

  /** Whole seconds until the open ballot closes (0 when closed or none). */
  secondsLeft() {
    if (this.ballotClosesAt === null) return 0;
    return Math.max(0, Math.ceil((this.ballotClosesAt - this.now()) / 1000));
  }

  /**
   * What the audience should be told about the narrator, or null when all is well.
   * A room that has never narrated and is starting (engine warming up, queued or
   * retrying) is "warming up", not "interrupted": a newcomer sees no failure loop.
   * @returns {{kind: "warming"|"busy"|"stalled"|"paused"|"waiting", text: string}|null}
   */
  notice() {
    const fresh = !this.hasText;
    if (this.phase === "paused" && (this.phaseReason === "moderator" || this.phaseReason === "killed")) {
      return { kind: "paused", text: "A moderator paused the story. It will continue shortly." };
    }
    if (this.phase === "paused" && this.phaseReason === "empty") {
      return { kind: "waiting", text: "The story is paused until someone is watching." };
    }
    if (fresh && (this.narrator !== "ok" || this.phaseReason === "starting" || this.phaseReason === "engine"
      || (this.phase === "narrating" && !this.partial?.text))) {
      return { kind: "warming", text: "The narrator is warming up. The story will begin shortly." };
    }
    if (this.narrator === "busy") return { kind: "busy", text: "The narrator is busy; the story continues shortly." };
    if (this.narrator === "stalled" || this.narrator === "down" || (this.phase === "paused" && this.phaseReason === "engine")) {
      return { kind: "stalled", text: "The narrator paused for a moment; the story will resume." };
    }
    return null;
  }
}
