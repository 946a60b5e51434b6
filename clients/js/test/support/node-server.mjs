// Starts a real Fablecast node (scripted engine, port 0, fast beats) for the tests,
// and stops it. The Python interpreter: $FABLECAST_PYTHON, else the repository's
// .venv, else python3; the repository's clients/python goes on PYTHONPATH.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const repo = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "..");

function python() {
  if (process.env.FABLECAST_PYTHON) return process.env.FABLECAST_PYTHON;
  const venv = join(repo, ".venv", "bin", "python");
  return existsSync(venv) ? venv : "python3";
}

/** Start a node; resolves to {port, url(room), stop()}. */
export async function startNode({ voteS = 1.0, tokens = 24, tokensPerS = 200 } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "fablecast-js-"));
  const config = join(dir, "node.toml");
  writeFileSync(config, `
[server]
port = 0
tick_ms = 20
uvloop = false
[engine]
kind = "scripted"
stall_timeout_s = 2.0
options = { tokens_per_s = ${tokensPerS}, first_token_s = 0.01 }
[[rooms]]
name = "demo"
title = "Test Room"
vote_s = ${voteS}
reveal_s = 0.1
retry_s = 0.2
narration_tokens = ${tokens}
`);
  const env = { ...process.env, PYTHONPATH: join(repo, "clients", "python") };
  const child = spawn(python(), ["-m", "fablecast.cli", "serve", "--config", config, "--log-level", "WARNING"], {
    cwd: repo, env, stdio: ["ignore", "pipe", "pipe"],
  });
  let stderr = "";
  child.stderr.on("data", (d) => { stderr += d; });
  const port = await new Promise((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`node did not start in 30 s: ${stderr}`)), 30_000);
    child.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/serving on http:\/\/[^:]+:(\d+)/);
      if (m) { clearTimeout(timer); resolve(Number(m[1])); }
    });
    child.on("exit", (code) => { clearTimeout(timer); reject(new Error(`node exited ${code}: ${stderr}`)); });
  });
  return {
    port,
    url: (room = "demo") => `ws://127.0.0.1:${port}/rooms/${room}`,
    stop: () => new Promise((resolve) => {
      if (child.exitCode !== null) { resolve(); return; }
      child.once("exit", () => resolve());
      child.kill("SIGTERM");
    }),
  };
}
