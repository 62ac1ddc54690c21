# The options of NixOS and nix-darwin that nix-module/*.nix defines or reads, declared
# with the types the real ones have (tests only; see stub-lib.nix). Defining an option
# not declared here fails, as it would on the real system.
{ lib }:

let
  inherit (lib) mkOption types;

  # Shared by NixOS and nix-darwin (their nix modules differ, these options do not).
  common = {
    options = {
      nix.enable = mkOption {
        type = types.bool;
        default = true;
      };
      # Freeform in both systems; confType accepts these value kinds.
      nix.settings = mkOption {
        type = types.attrsOf types.anything;
        default = { };
      };
      nix.extraOptions = mkOption {
        type = types.lines;
        default = "";
      };
      # Both systems' automatic nix-collect-garbage (retention warns beside it).
      nix.gc.automatic = mkOption {
        type = types.bool;
        default = false;
      };
      environment.systemPackages = mkOption {
        type = types.listOf types.package;
        default = [ ];
      };
      environment.shellAliases = mkOption {
        type = types.attrsOf (types.nullOr (types.either types.str types.path));
        default = { };
      };
      assertions = mkOption {
        type = types.listOf types.anything;
        default = [ ];
      };
      warnings = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
    };
  };
in
{
  nixos = {
    imports = [ common ];
    options = {
      systemd.tmpfiles.rules = mkOption {
        type = types.listOf types.str;
        default = [ ];
      };
      systemd.services = mkOption {
        type = types.attrsOf types.anything;
        default = { };
      };
      systemd.timers = mkOption {
        type = types.attrsOf types.anything;
        default = { };
      };
    };
  };

  darwin = {
    imports = [ common ];
    options = {
      launchd.daemons = mkOption {
        type = types.attrsOf types.anything;
        default = { };
      };
      # A submodule with a `text` of type lines in nix-darwin.
      system.activationScripts = mkOption {
        type = types.attrsOf (types.attrsOf types.lines);
        default = { };
      };
    };
    # As nix-darwin's activation-scripts.nix.
    config.system.activationScripts.extraActivation.text = lib.mkDefault "";
  };
}
