#!/usr/bin/env bash
# The main job on the bundled example: build nix-ledger, build examples/graph.nix (60
# derivations, some with several outputs) with nix-ledger-hook as the post-build-hook,
# then show what the ledger recorded.
#
# Needs Nix (installed from Debian's nix-bin when missing) and a user Nix trusts to set
# post-build-hook on the command line (root, or one listed in trusted-users).
# The demo keeps its ledger apart from yours: NIX_LEDGER_HOME=target/demo-ledger.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nix-build >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update -q && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q nix-bin
fi

cargo build --release --locked
export NIX_LEDGER_HOME="${NIX_LEDGER_HOME:-$PWD/target/demo-ledger}"
hook="$PWD/target/release/nix-ledger-hook"
salt="demo-$(date +%s)"

echo "== nix-build examples/graph.nix with post-build-hook = $hook"
nix-build examples/graph.nix --argstr salt "$salt" --no-out-link -j 2 \
    --option substituters '' --option post-build-hook "$hook" >/dev/null

echo "== nix-ledger history --limit 10"
target/release/nix-ledger history --limit 10
echo "== nix-ledger show (a derivation with three outputs)"
drv=$(nix-instantiate examples/graph.nix --argstr salt "$salt" --arg n 6 2>/dev/null | sed -n 6p)
target/release/nix-ledger show "$drv"
echo "== nix-ledger query"
target/release/nix-ledger query "SELECT count(*) AS builds, sum(duration_ms) AS total_ms FROM builds"

echo "== nix-ledger build (nb build: the same graph, new salt, through the wrapper)"
target/release/nix-ledger build -f examples/graph.nix --argstr salt "$salt-again" --no-link -j 2 \
    --option substituters '' --option post-build-hook "$hook"
echo "== nix-ledger tune (max-jobs and cores for this machine, from that build)"
target/release/nix-ledger tune
echo "== nix-ledger report"
target/release/nix-ledger report
echo "== nix-ledger store (what a GC would free, and what it would cost to rebuild)"
target/release/nix-ledger store
