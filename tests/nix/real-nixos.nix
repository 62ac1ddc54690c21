# Evaluates nix-module/nixos.nix inside a real, minimal NixOS configuration (no build),
# for tests/integration/nix_module.rs when NIX_LEDGER_TEST_NIXPKGS names a nixpkgs
# checkout:
#
#   nix-instantiate --eval --strict --json tests/nix/real-nixos.nix \
#     --argstr nixpkgs /path/to/nixpkgs --arg userConfig '{ services.nix-ledger.enable = true; }'
{
  nixpkgs,
  userConfig ? {
    services.nix-ledger.enable = true;
  },
  # Also evaluate the system's .drv path (all of NixOS; slower, but proves the
  # configuration as a whole evaluates, and checks assertions the way a rebuild does).
  toplevel ? false,
}:

let
  eval = import "${nixpkgs}/nixos/lib/eval-config.nix" {
    system = "x86_64-linux";
    modules = [
      ../../nix-module/nixos.nix
      userConfig
      {
        # The least a NixOS configuration needs to evaluate.
        boot.loader.grub.enable = false;
        fileSystems."/".device = "/dev/null";
        system.stateVersion = "24.05";
        documentation.enable = false;
        # Upstream nixpkgs defines these; some forks (the 24.05-era tree the tests were
        # written against) comment the defaults out. Harmless where they are defined.
        nix.settings.substituters = [ ];
        nix.settings.trusted-public-keys = [ ];
        nixpkgs.overlays = [ (import ./ghc-free-overlay.nix) ];
      }
    ];
  };
  inherit (eval) config;
  unitText = name: config.systemd.units.${name}.text or null;
  summary = import ./summary.nix {
    platform = "nixos";
    inherit (eval) config options;
  };
in
# With a failed assertion, only what a user would get: the summary lists the
# messages, and `toplevel` fails the way nixos-rebuild does.
if summary.failedAssertions != [ ] then
  summary // (if toplevel then { toplevel = config.system.build.toplevel.drvPath; } else { })
else
  summary
  // {
    # What the system would actually write, beyond the option values.
    # Absent when nix.enable = false: then nothing writes nix.conf.
    nixConf = config.environment.etc."nix/nix.conf".source.text or null;
    timerUnit = unitText "nix-ledger-maintenance.timer";
    serviceUnit = unitText "nix-ledger-maintenance.service";
    package = config.services.nix-ledger.package.drvPath;
  }
  // (if toplevel then { toplevel = config.system.build.toplevel.drvPath; } else { })
