// Starts `mailflow lsp` as the language server for *.mailflow files: diagnostics while typing,
// hover and go to definition. The highlighting, snippets and brackets need none of this.
// `mailflow.server.path` names the binary (default: `mailflow` on the PATH).
"use strict";

const vscode = require("vscode");
const { LanguageClient, TransportKind } = require("vscode-languageclient/node");

let client;

function serverOptions() {
  const config = vscode.workspace.getConfiguration("mailflow");
  const command = config.get("server.path") || "mailflow";
  return { command, args: ["lsp"], transport: TransportKind.stdio };
}

async function start() {
  const options = serverOptions();
  client = new LanguageClient("mailflow", "mailflow language server", options, {
    documentSelector: [{ language: "mailflow" }],
  });
  try {
    await client.start();
  } catch (err) {
    vscode.window.showErrorMessage(
      `mailflow: could not start \`${options.command} lsp\` (${err.message || err}). ` +
        "Install mailflow or set mailflow.server.path.",
    );
  }
}

async function activate(context) {
  context.subscriptions.push(
    vscode.workspace.onDidChangeConfiguration(async (e) => {
      if (e.affectsConfiguration("mailflow.server.path")) {
        if (client) await client.stop();
        await start();
      }
    }),
  );
  await start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
