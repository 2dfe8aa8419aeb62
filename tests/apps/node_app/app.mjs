// A Node SIP agent as many are written: node:http webhook server, global fetch, the `ws` package,
// OpenAI's URLs hard-coded (the Node SDK's rule: OPENAI_BASE_URL if set, else https://api.openai.com/v1).
//
// On realtime.call.incoming it verifies the webhook's signature, accepts the call, opens the call's
// Realtime socket, asks for one response, and hangs up when that response is done. Every step is
// one JSON line on stdout, so a test can follow the app without guessing how long it takes.
//
// How it reaches the API is what tests/test_node_intercept.py varies (docs/interception-node.md):
//   NODE_APP_FETCH     global (default: Node's own fetch, as the app is written)
//                      | undici-env (undici's EnvHttpProxyAgent as fetch's dispatcher: HTTPS_PROXY on Node 18+)
//   NODE_APP_WS_AGENT  none (default: `ws` connects by itself and ignores every proxy variable)
//                      | https-proxy-agent (an HttpsProxyAgent for HTTPS_PROXY: Node 18+)
//                      | https-global (https.globalAgent: proxied under NODE_USE_ENV_PROXY=1 on Node 22.21+/24.5+)
// and, with no code at all, NODE_OPTIONS="--require global-agent/bootstrap": the global-agent package
// then gives `ws` (and node:http/https) a proxying agent; GLOBAL_AGENT_ENVIRONMENT_VARIABLE_NAMESPACE=""
// makes it read HTTPS_PROXY/NO_PROXY as they are.
//
//   PORT=8000 OPENAI_API_KEY=... OPENAI_WEBHOOK_SECRET=whsec_... node app.mjs

import crypto from "node:crypto";
import http from "node:http";
import https from "node:https";

import WebSocket from "ws";

const API = process.env.OPENAI_BASE_URL || "https://api.openai.com/v1";
const SOCKET_BASE = API.replace(/^http/, "ws"); // https://... -> wss://..., http://... -> ws://...
const AUTH = { Authorization: `Bearer ${process.env.OPENAI_API_KEY}` };
const SECRET = process.env.OPENAI_WEBHOOK_SECRET ?? "";
const TOLERANCE_S = 300;

const log = (event, fields = {}) => console.log(JSON.stringify({ event, ...fields }));

/** The error's network cause, so a reader can tell "went through the proxy" from "tried the real host". */
function failure(err) {
  const cause = err?.cause ?? err;
  return { name: err?.name, message: String(err?.message ?? err), code: cause?.code, host: cause?.hostname };
}

/** Make global fetch honour HTTPS_PROXY/NO_PROXY where Node's own fetch does not (Node < 22.21, < 24). */
async function configureFetch(mode) {
  if (mode === "undici-env") {
    const { EnvHttpProxyAgent, setGlobalDispatcher } = await import("undici");
    setGlobalDispatcher(new EnvHttpProxyAgent());
  } else if (mode !== "global") {
    throw new Error(`NODE_APP_FETCH=${mode}: expected global or undici-env`);
  }
}

/** The `agent` option for `ws`: without one, `ws` dials the host itself, whatever the environment says. */
async function socketAgent(mode) {
  if (mode === "https-proxy-agent") {
    const proxy = process.env.HTTPS_PROXY || process.env.https_proxy;
    if (!proxy) return undefined;
    const { HttpsProxyAgent } = await import("https-proxy-agent");
    return new HttpsProxyAgent(proxy);
  }
  if (mode === "https-global") return https.globalAgent;
  if (mode !== "none") throw new Error(`NODE_APP_WS_AGENT=${mode}: expected none, https-proxy-agent or https-global`);
  return undefined;
}

/** Standard Webhooks: base64 HMAC-SHA256 of "id.timestamp.body" under the whsec_ key, within 5 minutes. */
function verified(headers, body) {
  const id = headers["webhook-id"];
  const timestamp = headers["webhook-timestamp"];
  const signatures = headers["webhook-signature"];
  if (!id || !timestamp || !signatures) return false;
  if (Math.abs(Date.now() / 1000 - Number(timestamp)) > TOLERANCE_S) return false;
  const key = SECRET.startsWith("whsec_") ? Buffer.from(SECRET.slice(6), "base64") : Buffer.from(SECRET);
  const expected = crypto.createHmac("sha256", key).update(`${id}.${timestamp}.`).update(body).digest();
  return signatures.split(" ").some((entry) => {
    const [version, sig] = entry.split(",", 2);
    const given = Buffer.from(sig ?? "", "base64");
    return version === "v1" && given.length === expected.length && crypto.timingSafeEqual(given, expected);
  });
}

async function post(path, body) {
  const r = await fetch(`${API}${path}`, {
    method: "POST", headers: { ...AUTH, "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  if (!r.ok) throw new Error(`POST ${path}: HTTP ${r.status} ${await r.text()}`);
  return r;
}

/** Greet the caller once, then hang up: the shortest whole conversation. */
function converse(callId, agent) {
  const ws = new WebSocket(`${SOCKET_BASE}/realtime?call_id=${encodeURIComponent(callId)}`, { headers: AUTH, agent });
  ws.on("open", () => {
    log("socket.open", { call_id: callId });
    ws.send(JSON.stringify({ type: "response.create" }));
  });
  ws.on("message", async (data) => {
    const event = JSON.parse(data.toString());
    if (event.type === "error") log("socket.error_event", { call_id: callId, error: event.error });
    if (event.type !== "response.done") return;
    log("response.done", { call_id: callId, status: event.response?.status });
    try {
      await post(`/realtime/calls/${encodeURIComponent(callId)}/hangup`, {});
      log("hungup", { call_id: callId });
    } catch (err) {
      log("failed", { call_id: callId, step: "hangup", ...failure(err) });
    }
    ws.close(1000);
  });
  ws.on("unexpected-response", (req, res) => {
    log("failed", { call_id: callId, step: "socket", message: `HTTP ${res.statusCode}` });
    req.destroy();
  });
  ws.on("error", (err) => log("failed", { call_id: callId, step: "socket", ...failure(err) }));
  ws.on("close", (code) => log("socket.closed", { call_id: callId, code }));
}

async function incoming(callId, agent) {
  try {
    await post(`/realtime/calls/${encodeURIComponent(callId)}/accept`, {
      type: "realtime", model: "gpt-realtime", instructions: "Greet the caller, then say goodbye.",
    });
  } catch (err) {
    log("failed", { call_id: callId, step: "accept", ...failure(err) });
    return;
  }
  log("accepted", { call_id: callId });
  converse(callId, agent);
}

async function main() {
  await configureFetch(process.env.NODE_APP_FETCH ?? "global");
  const agent = await socketAgent(process.env.NODE_APP_WS_AGENT ?? "none");
  const server = http.createServer((req, res) => {
    if (req.method === "GET" && req.url === "/healthz") return void res.end("ok");
    if (req.method !== "POST" || req.url !== "/webhook") return void res.writeHead(404).end();
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      if (!verified(req.headers, body)) {
        log("webhook.rejected");
        return void res.writeHead(400).end("bad signature");
      }
      res.writeHead(200).end();
      const event = JSON.parse(body.toString());
      log("webhook", { type: event.type, call_id: event.data?.call_id });
      if (event.type === "realtime.call.incoming") incoming(event.data.call_id, agent);
    });
  });
  server.listen(Number(process.env.PORT ?? 8000), "127.0.0.1", () => {
    log("listening", { port: server.address().port, node: process.version, api: API });
  });
}

main().catch((err) => {
  log("failed", { step: "start", ...failure(err) });
  process.exit(1);
});
