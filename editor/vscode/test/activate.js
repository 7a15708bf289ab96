// Activates extension.js under stand-ins for the `vscode` and `vscode-languageclient` modules
// (which exist only inside VS Code and after `npm install`) and lets the stand-in client start
// the server as vscode-languageclient does: spawn `command args...`, talk LSP over stdio. The
// server must answer `initialize` with its capabilities and exit 0 after `shutdown` + `exit`.
// Usage: node test/activate.js PATH-TO-MAILFLOW-BINARY (tests/it/lsp.rs runs it).
"use strict";

const Module = require("module");
const assert = require("assert");
const { spawn } = require("child_process");

const bin = process.argv[2];
const clients = [];

const vscode = {
  workspace: {
    getConfiguration: (section) => ({
      get: (key) => (section === "mailflow" && key === "server.path" ? bin : undefined),
    }),
    onDidChangeConfiguration: () => ({ dispose() {} }),
  },
  window: {
    showErrorMessage: (message) => {
      throw new Error(message);
    },
  },
};

function frame(message) {
  const body = Buffer.from(JSON.stringify({ jsonrpc: "2.0", ...message }), "utf8");
  return Buffer.concat([Buffer.from(`Content-Length: ${body.length}\r\n\r\n`), body]);
}

// Starts the server, runs initialize, shutdown and exit, resolves with the capabilities.
function session(server) {
  return new Promise((resolve, reject) => {
    const child = spawn(server.command, server.args, { stdio: ["pipe", "pipe", "inherit"] });
    let buffer = Buffer.alloc(0);
    let capabilities;
    const timer = setTimeout(() => reject(new Error("no answer within 30 s")), 30000);
    child.on("error", reject);
    child.stdout.on("data", (chunk) => {
      buffer = Buffer.concat([buffer, chunk]);
      for (;;) {
        const end = buffer.indexOf("\r\n\r\n");
        if (end < 0) return;
        const length = Number(/Content-Length: (\d+)/.exec(buffer.slice(0, end).toString())[1]);
        if (buffer.length < end + 4 + length) return;
        const message = JSON.parse(buffer.slice(end + 4, end + 4 + length).toString("utf8"));
        buffer = buffer.slice(end + 4 + length);
        if (message.id === 1) {
          capabilities = message.result.capabilities;
          child.stdin.write(frame({ method: "initialized", params: {} }));
          child.stdin.write(frame({ id: 2, method: "shutdown" }));
        } else if (message.id === 2) {
          child.stdin.write(frame({ method: "exit" }));
        }
      }
    });
    child.on("exit", (code) => {
      clearTimeout(timer);
      if (code === 0 && capabilities) resolve(capabilities);
      else reject(new Error(`the server exited with ${code}`));
    });
    child.stdin.write(frame({ id: 1, method: "initialize", params: { processId: null, rootUri: null, capabilities: {} } }));
  });
}

class LanguageClient {
  constructor(id, name, serverOptions, clientOptions) {
    Object.assign(this, { id, name, serverOptions, clientOptions });
    clients.push(this);
  }
  async start() {
    this.capabilities = await session(this.serverOptions);
  }
  async stop() {}
}

const load = Module._load;
Module._load = function (request, ...rest) {
  if (request === "vscode") return vscode;
  if (request === "vscode-languageclient/node") return { LanguageClient, TransportKind: { stdio: 0 } };
  return load.call(this, request, ...rest);
};

(async () => {
  const extension = require("../extension.js");
  const context = { subscriptions: [] };
  await extension.activate(context);
  assert.strictEqual(clients.length, 1);
  const [client] = clients;
  assert.strictEqual(client.serverOptions.command, bin);
  assert.deepStrictEqual(client.serverOptions.args, ["lsp"]);
  assert.deepStrictEqual(client.clientOptions.documentSelector, [{ language: "mailflow" }]);
  assert.strictEqual(client.capabilities.textDocumentSync, 1);
  assert.strictEqual(client.capabilities.hoverProvider, true);
  assert.strictEqual(client.capabilities.definitionProvider, true);
  assert.strictEqual(context.subscriptions.length, 1);
  await extension.deactivate();
  console.log("ok");
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
