# Evaluates nix-module/{nixos,darwin}.nix with the stub module system and reports
# what tests/integration/nix_module.rs asserts on. Runs with Debian's Nix alone:
#
#   nix-instantiate --eval --strict --json tests/nix/eval-module.nix \
#     --argstr platform nixos --arg userConfig '{ services.nix-ledger.enable = true; }'
{
  platform ? "nixos",
  # The configuration under test: a module.
  userConfig ? {
    services.nix-ledger.enable = true;
  },
  # Which module to evaluate; the flake test passes the flake's outputs here.
  module ? (if platform == "nixos" then ../../nix-module/nixos.nix else ../../nix-module/darwin.nix),
  packageOut ? null,
}:

let
  lib = import ./stub-lib.nix;
  platforms = import ./stub-platforms.nix { inherit lib; };
  pkgs = import ./stub-pkgs.nix {
    inherit lib packageOut;
    system = if platform == "nixos" then "x86_64-linux" else "aarch64-darwin";
  };
  eval = lib.evalModules {
    modules = [
      platforms.${platform}
      module
      userConfig
    ];
    specialArgs = { inherit pkgs; };
  };
in
import ./summary.nix {
  inherit platform;
  inherit (eval) config options;
}
