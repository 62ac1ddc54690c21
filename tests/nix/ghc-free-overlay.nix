# For the real-system tests only. Some nixpkgs checkouts used for testing lack
# pkgs/development/haskell-modules/hackage-packages.nix (it is large and often left
# out of partial copies); then anything built with GHC fails to evaluate. Nothing
# here is built, so such tools may be replaced by failing scripts of the same name.
final: prev:
let
  stand-in =
    name:
    final.writeShellScriptBin name ''
      echo "${name}: stand-in from tests/nix/ghc-free-overlay.nix" >&2
      exit 1
    ''
    // {
      # writeShellApplication asks whether shellcheck's compiler runs on the build
      # platform; "no platform" makes it skip the check instead of running this.
      compiler.meta.platforms = [ ];
    };
in
{
  shellcheck = stand-in "shellcheck";
  shellcheck-minimal = stand-in "shellcheck";
  pandoc = stand-in "pandoc";
}
