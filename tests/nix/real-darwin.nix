# Evaluates nix-module/darwin.nix inside a real, minimal nix-darwin configuration (no
# build; works on Linux), for tests/integration/nix_module.rs when
# NIX_LEDGER_TEST_NIX_DARWIN and NIX_LEDGER_TEST_NIXPKGS name checkouts:
#
#   nix-instantiate --eval --strict --json tests/nix/real-darwin.nix \
#     --argstr nixDarwin /path/to/nix-darwin --argstr nixpkgs /path/to/nixpkgs \
#     --arg userConfig '{ services.nix-ledger.enable = true; }'
{
  nixDarwin,
  nixpkgs,
  # A nixpkgs `lib` checkout (e.g. nix-community/nixpkgs.lib) to use instead of
  # nixpkgs' own, for a nix-darwin newer than that nixpkgs. Empty: nixpkgs' lib.
  nixpkgsLib ? "",
  userConfig ? {
    services.nix-ledger.enable = true;
  },
  toplevel ? false,
}:

let
  lib = import "${if nixpkgsLib != "" then nixpkgsLib else nixpkgs}/lib";
  eval = import "${nixDarwin}/eval-config.nix" (
    {
      inherit lib;
      modules = [
        ../../nix-module/darwin.nix
        userConfig
        (
          { options, ... }:
          {
            nixpkgs.source = nixpkgs;
            nixpkgs.hostPlatform = "aarch64-darwin";
            nixpkgs.overlays = [
              (import ./ghc-free-overlay.nix)
            ] ++ lib.optional (nixpkgsLib != "") (import ./old-nixpkgs-polyfill.nix);
            # Newer nix-darwin insists on an explicit value, and each release has its
            # own newest one: take the release's default, explicitly.
            system.stateVersion = options.system.stateVersion.default;
            documentation.enable = false;
          }
        )
      ];
    }
    # nix-darwin checks that nixpkgs is of its release; the mixed lib/pkgs case is a
    # deliberate mismatch.
    // lib.optionalAttrs (nixpkgsLib != "") { enableNixpkgsReleaseCheck = false; }
  );
  inherit (eval) config;
  summary = import ./summary.nix {
    platform = "darwin";
    inherit (eval) config options;
  };
in
if summary.failedAssertions != [ ] then
  summary // (if toplevel then { toplevel = eval.system.drvPath; } else { })
else
  summary
  // {
    # The plist launchd would load, and what the activation script runs.
    plist =
      if config.launchd.daemons ? nix-ledger-maintenance then
        config.environment.launchDaemons."org.nixos.nix-ledger-maintenance.plist".text
      else
        null;
    nixConf = config.environment.etc."nix/nix.conf".source.text or null;
    package = config.services.nix-ledger.package.drvPath;
  }
  // (if toplevel then { toplevel = eval.system.drvPath; } else { })
