# A small derivation graph for trying nix-ledger, and for its tests and benchmarks.
#
#   nix-build examples/graph.nix --argstr salt "$(date +%s)" --no-out-link \
#     --option substituters '' --option post-build-hook "$PWD/target/release/nix-ledger-hook"
#
# Node i depends on node (i-1)/2 (a wide tree, so -j N runs N builds at once) and every
# third node also on node i-2. Every `multiOutputEvery`-th node has outputs out, dev and
# doc. `salt` makes every derivation new, so Nix really builds instead of reusing.
# `changeNode`/`changeValue` give one node an extra variable (a one-node change for
# `nix-ledger why`); `top = true` returns one derivation on top of every node that no
# other node depends on, instead of the list.
# Builders get no PATH from Nix, hence PATH and /bin/sh.
{ salt ? "example"
, n ? 60
, multiOutputEvery ? 5
, namePrefix ? "ledger-example"
, changeNode ? -1
, changeValue ? ""
, top ? false
}:
let
  depsOf = i:
    (if i == 0 then [ ] else [ ((i - 1) / 2) ])
    ++ (if i > 2 && i - (i / 3) * 3 == 0 then [ (i - 2) ] else [ ]);
  isMulti = i: multiOutputEvery > 0 && i - (i / multiOutputEvery) * multiOutputEvery == 0;
  node = i: derivation ({
    name = "${namePrefix}-${toString i}";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    inherit salt;
    outputs = if isMulti i then [ "out" "dev" "doc" ] else [ "out" ];
    deps = map (j: nodes.${toString j}) (depsOf i);
    args = [ "-c" ''
      for d in $deps; do test -e "$d" || exit 1; done
      for o in $outputs; do eval "p=\$$o"; echo "$name $o $salt" > "$p"; done
    '' ];
  } // (if i == changeNode then { change = changeValue; } else { }));
  nodes = builtins.listToAttrs
    (builtins.genList (i: { name = toString i; value = node i; }) n);
  dependedOn = builtins.concatLists (builtins.genList depsOf n);
  topDrv = derivation {
    name = "${namePrefix}-top";
    system = builtins.currentSystem;
    builder = "/bin/sh";
    PATH = "/usr/bin:/bin";
    inherit salt;
    deps = map (i: nodes.${toString i})
      (builtins.filter (i: !(builtins.elem i dependedOn)) (builtins.genList (i: i) n));
    args = [ "-c" ''for d in $deps; do test -e "$d" || exit 1; done; echo "$salt" > "$out"'' ];
  };
in
if top then topDrv else builtins.genList (i: nodes.${toString i}) n
