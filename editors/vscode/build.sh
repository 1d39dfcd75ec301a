#!/usr/bin/env bash
# Builds the extension and packages it as a .vsix (needs Node.js 18+ and the npm registry).
# Not part of CI: the Python test suite does not depend on it.
#   editors/vscode/build.sh            -> editors/vscode/amplint-<version>.vsix
#   code --install-extension editors/vscode/amplint-*.vsix
set -euo pipefail
cd "$(dirname "$0")"
npm install --no-audit --no-fund
npm run compile
npx --yes @vscode/vsce package --allow-missing-repository --skip-license
