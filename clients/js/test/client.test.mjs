// The SDK against a real node (scripted engine), both codecs, plus its pure parts.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { FablecastClient, RoomState, backoffDelay } from "../fablecast.js";
import { startNode } from "./support/node-server.mjs";

// Node >= 22 has a WebSocket; older ones (Debian's 18, 20 without a flag) use `ws`.
const WebSocketImpl = globalThis.WebSocket ?? (await import("ws")).WebSocket;
const SCALE = Number(process.env.FABLECAST_TEST_TIMEOUT_SCALE ?? "1");

/** Resolve when `predicate()` holds, polling; reject after `ms` (scaled). */
function until(predicate, ms = 10_000, what = "condition") {
  const deadline = Date.now() + ms * SCALE;
  return new Promise((resolve, reject) => {
    const poll = () => {
      if (predicate()) resolve();
      else if (Date.now() > deadline) reject(new Error(`timed out waiting for ${what}`));
      else setTimeout(poll, 10);
    };
    poll();
  });
}

/** A client plus the room it folds, and every room frame seq it processed. */
function watch(url, options = {}) {
  const client = new FablecastClient(url, { backoffBaseMs: 20, WebSocket: WebSocketImpl, ...options });
  const room = new RoomState();
  const seqs = [];
  const types = [];
  client.addEventListener("message", (e) => {
    const msg = e.detail;
    types.push(msg.type);
    if (typeof msg.seq === "number" && msg.type !== "snapshot" && msg.type !== "welcome") seqs.push(msg.seq);
    room.apply(msg);
  });
  return { client, room, seqs, types };
}

/** The whole story text a RoomState holds (committed beats, then the partial one). */
const text = (room) => room.story.map((b) => `${b.beat}:${b.text}`).join("\n");

describe("against a real node", () => {
  let node;
  before(async () => { node = await startNode(); });
  after(async () => { await node?.stop(); });

  for (const codec of ["json", "msgpack"]) {
    test(`${codec}: joins, text grows, a vote is acknowledged and tallied`, async () => {
      const v = watch(node.url(), { codec });
      await v.client.connect();
      try {
        await until(() => v.types.includes("snapshot"), 10_000, "snapshot");
        assert.equal(v.types[0], "welcome");
        assert.equal(v.room.title, "Test Room");
        await until(() => (v.room.partial?.text.length ?? 0) > 0 || v.room.story.length > 0, 10_000, "text");
        await until(() => v.room.ballot !== null && v.room.secondsLeft() > 0, 15_000, "ballot");
        const { window } = v.room.ballot;
        assert.ok(v.client.vote(window, 1));
        await until(() => v.room.myVote === 1, 5_000, "vote_ack");
        await until(() => v.room.tally?.counts[1] >= 1, 5_000, "tally");
      } finally {
        v.client.close();
      }
    });
  }

  test("a dropped socket resumes with no duplicated and no missing frame", async () => {
    const steady = watch(node.url());
    const dropped = watch(node.url());
    await steady.client.connect();
    await dropped.client.connect();
    try {
      await until(() => dropped.seqs.length > 5, 10_000, "frames");
      const participant = dropped.client.participant;
      assert.match(participant, /^anon-/);
      const resumes = [];
      dropped.client.addEventListener("welcome", (e) => resumes.push(e.detail));
      dropped.client.drop();
      await until(() => resumes.length === 1, 10_000, "resume");
      assert.equal(resumes[0].recovered, true);
      assert.equal(resumes[0].participant, participant, "identity kept across the reconnect");
      // Let a beat or two go by, then compare with the client that never dropped.
      const beat = dropped.room.story.length;
      await until(() => dropped.room.story.length >= beat + 2, 20_000, "two more beats");
      await until(() => steady.client.seq === dropped.client.seq, 5_000, "same seq");
      for (const v of [steady, dropped]) {
        const from = v.seqs[0];
        assert.deepEqual(v.seqs, v.seqs.map((_, i) => from + i), "contiguous, no duplicate");
      }
      const common = (v) => v.room.story.filter((b) => b.beat > 1);
      assert.deepEqual(common(dropped), common(steady));
      assert.equal(text(dropped.room), text(steady.room));
      assert.equal(dropped.types.filter((t) => t === "snapshot").length, 1, "resumed, not resynced");
    } finally {
      steady.client.close();
      dropped.client.close();
    }
  });

  test("a stored identity is sent back; an unknown room is final (4004, no retry)", async () => {
    const store = new Map();
    const storage = { getItem: (k) => store.get(k) ?? null, setItem: (k, v) => store.set(k, v) };
    const first = watch(node.url(), { storage });
    await first.client.connect();
    await until(() => first.client.welcome !== null, 10_000, "welcome");
    const id = first.client.participant;
    first.client.close();
    const second = watch(node.url(), { storage });
    await second.client.connect();
    await until(() => second.client.welcome !== null, 10_000, "welcome");
    assert.equal(second.client.welcome.participant, id);
    second.client.close();

    const lost = watch(node.url("no-such-room"));
    await lost.client.connect();
    await until(() => lost.client.state === "closed", 10_000, "closed");
    assert.deepEqual(lost.client.finalClose?.code, 4004);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(lost.client.state, "closed");
  });
});

describe("pure parts", () => {
  test("backoff is full jitter under a growing cap", () => {
    assert.equal(backoffDelay(0, 250, 10_000, () => 1), 250);
    assert.equal(backoffDelay(3, 250, 10_000, () => 1), 2000);
    assert.equal(backoffDelay(30, 250, 10_000, () => 1), 10_000);
    assert.equal(backoffDelay(5, 250, 10_000, () => 0), 0);
  });

  test("a gap in seq makes the client resume from the last frame it has", async () => {
    const sockets = [];
    class FakeSocket {
      constructor(url, protocols) { this.url = url; this.protocols = protocols; this.sent = []; this.readyState = 1; sockets.push(this); queueMicrotask(() => this.onopen?.()); }
      send(data) { this.sent.push(JSON.parse(data)); }
      close() { this.readyState = 3; }
      feed(msg) { this.onmessage?.({ data: JSON.stringify(msg) }); }
    }
    const client = new FablecastClient("ws://x/rooms/demo", { WebSocket: FakeSocket, backoffBaseMs: 1 });
    const seen = [];
    client.addEventListener("message", (e) => seen.push(e.detail.seq));
    await client.connect();
    await until(() => sockets[0].sent.length === 1, 1000, "hello");
    assert.deepEqual(sockets[0].sent[0], { type: "hello" });
    const ws = sockets[0];
    ws.feed({ type: "welcome", participant: "anon-1", epoch: "e1", seq: 3, recovered: null });
    ws.feed({ type: "snapshot", epoch: "e1", seq: 3, story: [], phase: "narrating" });
    ws.feed({ type: "token", epoch: "e1", seq: 4, beat: 1, text: "a" });
    ws.feed({ type: "some_future_frame", epoch: "e1", seq: 5 });
    ws.feed({ type: "token", epoch: "e1", seq: 5, beat: 1, text: "dup" });
    ws.feed({ type: "token", epoch: "e1", seq: 7, beat: 1, text: "gap" });
    assert.deepEqual(seen.slice(1), [3, 4, 5], "duplicate and post-gap frames are not delivered");
    await until(() => sockets.length === 2 && sockets[1].sent.length === 1, 1000, "reconnect");
    assert.deepEqual(sockets[1].sent[0], { type: "hello", participant: "anon-1", epoch: "e1", since: 5 });
    client.close();
  });

  test("a refused stored identity is forgotten and the client joins once more without it", async () => {
    const sockets = [];
    class FakeSocket {
      constructor() { this.sent = []; this.readyState = 1; sockets.push(this); queueMicrotask(() => this.onopen?.()); }
      send(data) { this.sent.push(JSON.parse(data)); }
      close() { this.readyState = 3; }
    }
    const store = new Map([["fablecast.identity", JSON.stringify({ participant: "anon-old", token: "t.old" })]]);
    const storage = { getItem: (k) => store.get(k) ?? null, setItem: (k, v) => store.set(k, v) };
    const client = new FablecastClient("ws://x/rooms/demo", { WebSocket: FakeSocket, storage });
    await client.connect();
    await until(() => sockets[0].sent.length === 1, 1000, "hello");
    assert.deepEqual(sockets[0].sent[0], { type: "hello", participant: "anon-old", token: "t.old" });
    sockets[0].onclose({ code: 4401, reason: "token expired" });
    await until(() => sockets.length === 2 && sockets[1].sent.length === 1, 1000, "second hello");
    assert.deepEqual(sockets[1].sent[0], { type: "hello" });
    sockets[1].onmessage({ data: JSON.stringify({ type: "welcome", participant: "anon-new", identity: "t.new", epoch: "e", seq: 0, recovered: null }) });
    assert.deepEqual(JSON.parse(store.get("fablecast.identity")), { participant: "anon-new", token: "t.new" });
    sockets[1].onclose({ code: 4401, reason: "refused again" });
    assert.equal(client.state, "reconnecting", "a later refusal of the new identity forgets it too (each retry follows a welcome)");
    client.close();
  });

  test("RoomState: late join, growing text, commit, and the warming-up notice", () => {
    const room = new RoomState();
    const mood = { type: "mood", valence: 0, arousal: 0, intensity: 0, reactions: {} };
    room.apply({ type: "snapshot", epoch: "e", seq: 9, title: "T", phase: "paused", beat: 1, story: [],
      truncated: false, partial: "", ballot: null, tally: null, mood, viewers: 1, narrator: "ok", reason: "starting" });
    assert.equal(room.notice()?.kind, "warming");
    room.apply({ type: "narrator", state: "stalled", message: "no token" });
    assert.equal(room.notice()?.kind, "warming", "a newcomer never sees 'interrupted' before any text");
    room.apply({ type: "narrator", state: "ok" });
    room.apply({ type: "phase", phase: "narrating", beat: 1, reason: null });
    room.apply({ type: "beat_start", beat: 1, choice: null });
    assert.equal(room.apply({ type: "token", beat: 1, text: "Once" }), "text");
    room.apply({ type: "token", beat: 1, text: " upon" });
    assert.equal(room.partial.text, "Once upon");
    assert.equal(room.notice(), null);
    room.apply({ type: "beat_end", beat: 1, text: "Once upon a time." });
    assert.deepEqual(room.story, [{ beat: 1, text: "Once upon a time.", choice: null }]);
    room.apply({ type: "narrator", state: "stalled", message: "no token" });
    assert.equal(room.notice()?.kind, "stalled");
    room.apply({ type: "cue", time_of_day: "night", weather: "rain" });
    room.apply({ type: "cue", lighting: "lanterns" });
    assert.deepEqual([room.cue.time_of_day, room.cue.lighting], ["night", "lanterns"]);
  });
});
