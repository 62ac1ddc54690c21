{
  description = "nix-ledger: records every Nix build in a SQLite ledger";

  # Only for the package outputs; the modules build the package with the pkgs of the
  # system they are part of. Use `inputs.nixpkgs.follows` to share yours.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
        "x86_64-darwin"
        "aarch64-darwin"
      ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: rec {
        nix-ledger = pkgs.callPackage ./nix-module/package.nix { };
        default = nix-ledger;
      });

      overlays.default = final: prev: {
        nix-ledger = final.callPackage ./nix-module/package.nix { };
      };

      # A set that imports the file, rather than the path itself: `nix flake check`
      # (2.8 at least) rejects a path as a module. Importing by path keeps the file's
      # name in error messages and lets the module system de-duplicate it.
      nixosModules.default = {
        imports = [ ./nix-module/nixos.nix ];
      };
      darwinModules.default = {
        imports = [ ./nix-module/darwin.nix ];
      };
    };
}
