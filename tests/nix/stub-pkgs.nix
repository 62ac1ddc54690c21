# A stand-in for a nixpkgs package set, for tests only (see stub-lib.nix): just the
# attributes nix-module/*.nix and flake.nix use. Derivations are attribute sets with a
# made-up store path; nothing is built or written to the store.
{
  lib,
  system ? "x86_64-linux",
  # Where the nix-ledger package "is": the Rust tests point this at a directory with
  # stand-in binaries, to run the generated scripts for real.
  packageOut ? null,
}:

let
  fakeDerivation = name: {
    type = "derivation";
    inherit name system;
    outPath = "${builtins.storeDir}/${builtins.substring 0 32 (builtins.hashString "sha256" name)}-${name}";
  };

  pkgs = {
    inherit lib system;

    stdenv.hostPlatform = {
      inherit system;
      isDarwin = builtins.match ".*-darwin" system != null;
      isLinux = builtins.match ".*-linux" system != null;
    };
    # A native build: the platform the package is built on runs what it builds.
    stdenv.buildPlatform.canExecute = platform: platform.system == system;

    runtimeShell = "${(fakeDerivation "bash-5.2").outPath}/bin/bash";
    libiconv = fakeDerivation "libiconv-1.17";

    # As nixpkgs' writeShellScript: a bash shebang, then the text.
    writeShellScript =
      name: text:
      fakeDerivation name
      // {
        executable = true;
        text = "#!${pkgs.runtimeShell}\n${text}";
      };

    installShellFiles = fakeDerivation "install-shell-files";

    # Keeps the arguments, so the tests can check what package.nix asks for.
    rustPlatform.buildRustPackage =
      args:
      fakeDerivation "${args.pname}-${args.version}"
      // {
        inherit args;
        inherit (args) pname version meta;
      }
      // lib.optionalAttrs (packageOut != null) { outPath = packageOut; };

    callPackage =
      fn: overrides:
      let
        f = if builtins.isFunction fn then fn else import fn;
        scope = pkgs // overrides;
      in
      f (builtins.mapAttrs (name: _: scope.${name}) (builtins.functionArgs f));
  };
in
pkgs
