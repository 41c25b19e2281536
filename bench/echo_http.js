// A minimal, fast Streamable HTTP MCP server (stateless, JSON answers) with
// one tool, `echo`: the benchmark's HTTP backend, so that what is measured
// is the gateway (or its peer), not the server.  Listens on 127.0.0.1 only;
// prints "LISTENING <port>" once ready; exits when stdin closes.
"use strict";
const http = require("http");

const TOOLS = { tools: [{ name: "echo", description: "Return the given message.", inputSchema: { type: "object", properties: { message: { type: "string" } }, required: ["message"] } }] };
const VERSIONS = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];

function answer(msg) {
  if (msg.id === undefined || msg.method === undefined) return null;
  const p = msg.params || {};
  switch (msg.method) {
    case "initialize":
      return { protocolVersion: VERSIONS.includes(p.protocolVersion) ? p.protocolVersion : "2025-11-25", capabilities: { tools: {} }, serverInfo: { name: "echo-http", version: "1" } };
    case "ping":
      return {};
    case "tools/list":
      return TOOLS;
    case "tools/call":
      return { content: [{ type: "text", text: String((p.arguments || {}).message) }] };
    default:
      return undefined;
  }
}

const server = http.createServer((req, res) => {
  if (req.method !== "POST") { res.writeHead(405).end(); return; }
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    let msg;
    try { msg = JSON.parse(Buffer.concat(chunks)); } catch (e) { res.writeHead(400).end(); return; }
    const result = answer(msg);
    if (result === null) { res.writeHead(202).end(); return; }
    const body = result === undefined
      ? { jsonrpc: "2.0", id: msg.id, error: { code: -32601, message: "Method not found" } }
      : { jsonrpc: "2.0", id: msg.id, result };
    const data = JSON.stringify(body);
    res.writeHead(200, { "content-type": "application/json", "content-length": Buffer.byteLength(data) });
    res.end(data);
  });
});
server.keepAliveTimeout = 60000;
server.listen(Number(process.env.PORT || 0), "127.0.0.1", () => {
  process.stdout.write(`LISTENING ${server.address().port}\n`);
});
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
