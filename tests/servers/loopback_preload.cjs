// Preload for Node MCP servers under test (e.g. @modelcontextprotocol/server-everything):
//
//   PORT=0 node --require tests/servers/loopback_preload.cjs \
//       tests/node/node_modules/@modelcontextprotocol/server-everything/dist/index.js streamableHttp
//
// * Every TCP listen() is forced onto 127.0.0.1 (server-everything calls
//   app.listen(PORT) with no host, which would bind all interfaces).
// * When the first TCP server is listening, prints exactly one line
//   "LISTENING <port>" to stdout (PORT=0 picks a free port; the server's own
//   "listening on port 0" message would not tell the real one).
// * console.log/info/debug go to stderr, so stdout carries only that line
//   (server-everything console.logs on every request).
// * Exits 0 on SIGTERM/SIGINT and when stdin reaches EOF.
"use strict";

const fs = require("fs");
const net = require("net");

const LOOPBACK = "127.0.0.1";
let announced = false;

console.log = console.error;
console.info = console.error;
console.debug = console.error;

function isPort(v) {
  return typeof v === "number" || (typeof v === "string" && /^\d+$/.test(v));
}

const origListen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (args.length && typeof args[0] === "object" && args[0] !== null && !Array.isArray(args[0])) {
    if (args[0].path === undefined && args[0].fd === undefined && args[0].handle === undefined && !args[0]._handle) {
      args[0] = { ...args[0], host: LOOPBACK };
    }
  } else if (args.length === 0 || args[0] === undefined || args[0] === null || isPort(args[0])) {
    if (args.length === 0) args.push(0);
    if (typeof args[1] === "string") args[1] = LOOPBACK;
    else args.splice(1, 0, LOOPBACK);
  }
  this.once("listening", () => {
    const addr = this.address();
    if (!announced && addr && typeof addr === "object") {
      announced = true;
      fs.writeSync(1, `LISTENING ${addr.port}\n`);
      process.stderr.write(`loopback_preload: listening on ${addr.address}:${addr.port} (pid ${process.pid})\n`);
    }
  });
  return origListen.apply(this, args);
};

process.on("SIGTERM", () => process.exit(0));
process.on("SIGINT", () => process.exit(0));
process.stdin.on("end", () => process.exit(0));
process.stdin.on("error", () => process.exit(0));
process.stdin.resume();
