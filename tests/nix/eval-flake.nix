# Evaluates flake.nix's outputs with stub inputs (no nixpkgs, no network, no flakes
# feature needed): imports the file and calls `outputs` the way Nix would, with a
# stub `nixpkgs` input, and reports what tests/integration/nix_module.rs asserts on.
#
#   nix-instantiate --eval --strict --json tests/nix/eval-flake.nix --argstr system x86_64-linux
{
  system ? "x86_64-linux",
}:

let
  lib = import ./stub-lib.nix;
  flake = import ../../flake.nix;
  root = toString ../..;

  nixpkgs = {
    inherit lib;
    legacyPackages = lib.genAttrs [
      "x86_64-linux"
      "aarch64-linux"
      "x86_64-darwin"
      "aarch64-darwin"
      "riscv64-linux"
    ] (system: import ./stub-pkgs.nix { inherit lib system; });
  };
  # As Nix does: `self` is the outputs plus the source's store path.
  self = outputs // {
    outPath = root;
  };
  outputs = flake.outputs { inherit self nixpkgs; };

  package = outputs.packages.${system}.default;
  pkgs = nixpkgs.legacyPackages.${system};
  overlaid = pkgs // outputs.overlays.default overlaid pkgs;

  evalModule =
    platform: module:
    import ./eval-module.nix {
      inherit platform module;
    };
  relative = path: lib.removePrefix "${root}/" (toString path);
in
{
  inherit (flake) description;
  inputs = lib.mapAttrs (_: input: input.url) flake.inputs;
  outputArguments = builtins.attrNames (builtins.functionArgs flake.outputs);
  outputNames = builtins.attrNames outputs;
  packageSystems = builtins.attrNames outputs.packages;
  packageNames = builtins.attrNames outputs.packages.${system};
  package = {
    inherit (package) pname version;
    lockFile = relative package.args.cargoLock.lockFile;
    srcIsRepositoryRoot = toString package.args.src.origSrc == root;
    # Which top-level entries the source filter keeps.
    srcKeeps = lib.genAttrs [
      "src"
      "hook"
      "tests"
      "Cargo.toml"
      "Cargo.lock"
      "target"
      "nix-module"
      "docs"
      "flake.nix"
      "result"
      "result-bin"
    ] (name: package.args.src.filter "${root}/${name}" "regular");
    inherit (package.args) checkFlags postInstall;
    inherit (package.meta) mainProgram;
    buildInputs = map toString package.args.buildInputs;
    sameAsNamed = package.outPath == outputs.packages.${system}.nix-ledger.outPath;
  };
  overlayPackage = overlaid.nix-ledger.pname;
  overlayOutPath = overlaid.nix-ledger.outPath == package.outPath;
  nixosModule = map relative outputs.nixosModules.default.imports;
  darwinModule = map relative outputs.darwinModules.default.imports;
  # The modules the flake exports, evaluated.
  nixos = evalModule "nixos" outputs.nixosModules.default;
  darwin = evalModule "darwin" outputs.darwinModules.default;
}
