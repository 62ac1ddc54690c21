# The benchmark store of benches/gc_store.rs: `n` derivations in a DAG (each depends on
# up to three earlier ones), every 5th with two outputs, every 4th with a source added by
# evaluation. Instantiated, not built: the bench creates the outputs and registers them.
{
  n ? 8200,
  salt ? "",
}:
let
  node =
    i:
    derivation (
      {
        name = "p${toString i}";
        system = builtins.currentSystem;
        builder = "/bin/sh";
        args = [
          "-c"
          "mkdir $out"
        ];
        inherit salt;
        outputs = if i - (i / 5) * 5 == 0 then [ "out" "dev" ] else [ "out" ];
        deps = map (j: nodes.${toString j}) (deps i);
      }
      // (
        if i - (i / 4) * 4 == 0 then
          { src = builtins.toFile "s${toString i}-${salt}" "source ${toString i}"; }
        else
          { }
      )
    );
  mod = a: b: a - (a / b) * b;
  deps =
    i:
    if i == 0 then
      [ ]
    else
      map (x: x.key) (
        builtins.genericClosure {
          startSet = map (k: { key = k; }) [
            (mod 104729 i)
            (mod 1299709 i)
            (mod (15485863 + i / 3) i)
          ];
          operator = _: [ ];
        }
      );
  nodes = builtins.listToAttrs (
    builtins.genList (i: {
      name = toString i;
      value = node i;
    }) n
  );
in
builtins.genList (i: nodes.${toString i}) n
