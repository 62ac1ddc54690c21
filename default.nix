# For users without flakes:
#   nix-build                        # the package, with <nixpkgs>
#   imports = [ "${nix-ledger}/nix-module/nixos.nix" ];   # or darwin.nix
{
  pkgs ? import <nixpkgs> { },
}:

{
  nix-ledger = pkgs.callPackage ./nix-module/package.nix { };
  nixosModule = ./nix-module/nixos.nix;
  darwinModule = ./nix-module/darwin.nix;
}
