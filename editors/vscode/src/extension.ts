// Starts `amplint server` for Python files. All linting logic lives in the server; this file
// only decides which executable to run and forwards the user's settings.
import * as vscode from "vscode";
import {
  Executable,
  LanguageClient,
  LanguageClientOptions,
  ServerOptions,
} from "vscode-languageclient/node";

let client: LanguageClient | undefined;
let output: vscode.OutputChannel | undefined;

interface PythonExtensionApi {
  environments?: {
    getActiveEnvironmentPath(resource?: vscode.Uri): { path: string };
  };
}

// The interpreter the Python extension has selected, if it is installed: the environment
// a user already chose for the project is the one most likely to have amplint in it.
async function selectedInterpreter(): Promise<string | undefined> {
  const extension = vscode.extensions.getExtension<PythonExtensionApi>("ms-python.python");
  if (!extension) {
    return undefined;
  }
  try {
    const api = extension.isActive ? extension.exports : await extension.activate();
    const folder = vscode.workspace.workspaceFolders?.[0]?.uri;
    const path = api?.environments?.getActiveEnvironmentPath(folder)?.path;
    return path || undefined;
  } catch {
    return undefined;
  }
}

async function serverExecutable(config: vscode.WorkspaceConfiguration): Promise<Executable> {
  const path = config.get<string>("path", "").trim();
  if (path) {
    return { command: path, args: ["server"] };
  }
  const interpreter = config.get<string>("interpreter", "").trim() || (await selectedInterpreter());
  if (interpreter) {
    return { command: interpreter, args: ["-m", "amplint", "server"] };
  }
  return { command: "amplint", args: ["server"] };
}

async function start(): Promise<void> {
  const config = vscode.workspace.getConfiguration("amplint");
  const executable = await serverExecutable(config);
  output ??= vscode.window.createOutputChannel("amplint");
  output.appendLine(`Starting ${executable.command} ${(executable.args ?? []).join(" ")}`);

  const serverOptions: ServerOptions = { run: executable, debug: executable };
  const clientOptions: LanguageClientOptions = {
    documentSelector: [
      { scheme: "file", language: "python" },
      { scheme: "untitled", language: "python" },
      // Python cells of Jupyter notebooks: the server syncs them as notebook documents
      // (LSP 3.17) and checks each notebook's code cells together, as one module.
      { notebook: "jupyter-notebook", language: "python" },
      { notebook: "interactive", language: "python" },
    ],
    outputChannel: output,
    // Read by the server once, at initialize; a settings change restarts it (below).
    initializationOptions: {
      select: config.get<string[]>("select", []),
      ignore: config.get<string[]>("ignore", []),
    },
  };
  client = new LanguageClient("amplint", "amplint", serverOptions, clientOptions);
  try {
    await client.start();
  } catch (error) {
    void vscode.window.showErrorMessage(
      `amplint: could not start the language server (${String(error)}). ` +
        "Install it with `pip install 'amplint[lsp]'` or set `amplint.path` / `amplint.interpreter`.",
    );
  }
}

async function stop(): Promise<void> {
  const running = client;
  client = undefined;
  if (running) {
    await running.stop();
  }
}

async function restart(): Promise<void> {
  await stop();
  await start();
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  context.subscriptions.push(
    vscode.commands.registerCommand("amplint.restart", restart),
    vscode.workspace.onDidChangeConfiguration((event) => {
      if (event.affectsConfiguration("amplint")) {
        void restart();
      }
    }),
  );
  await start();
}

export function deactivate(): Thenable<void> | undefined {
  return stop();
}
