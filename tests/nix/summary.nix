# What the tests look at in an evaluated configuration, as plain JSON-able data.
# Shared by the stub harness (eval-module.nix) and the real-system harnesses
# (real-nixos.nix, real-darwin.nix) so both are checked the same way.
{
  platform,
  config,
  options,
}:

let
  cfg = config.services.nix-ledger;
  maintenanceOn = cfg.enable && cfg.maintenance.enable && cfg.maintenance.user != null;
  # Derivations become their store paths; the scripts' text is reported separately.
  plain = value: if builtins.isAttrs value && value ? outPath then toString value else value;
  pick = names: set: builtins.listToAttrs (map (name: {
    inherit name;
    value = plain set.${name};
  }) (builtins.filter (name: set ? ${name} && set.${name} != null) names));

  # Every option under services.nix-ledger, and whether it has a description.
  optionPaths =
    prefix: node:
    if builtins.isAttrs node && node._type or null == "option" then
      [
        {
          path = prefix;
          described = builtins.isString (node.description or null) && node.description != "";
        }
      ]
    else if builtins.isAttrs node then
      builtins.concatMap (name: optionPaths (prefix + "." + name) node.${name}) (builtins.attrNames node)
    else
      [ ];
  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) config.assertions);
in
# Both systems check assertions before building anything from the configuration, and
# stop there if one fails; a test sees what a user would.
if failedAssertions != [ ] then
  { inherit platform failedAssertions; }
else
{
  inherit platform failedAssertions;
  inherit (config) warnings;
  postBuildHook = config.nix.settings.post-build-hook or null;
  shellAliases = config.environment.shellAliases;
  # Ours only: a real system has a hundred more, and when a real-system test mixes
  # releases some of those do not evaluate (tryEval skips them).
  systemPackages = builtins.filter (p: builtins.match ".*nix-ledger.*" p != null) (
    builtins.concatMap (
      p:
      let
        path = builtins.tryEval (toString p);
      in
      if path.success then [ path.value ] else [ ]
    ) config.environment.systemPackages
  );
  hookProgram = if cfg.enable then toString cfg.hook.program else null;
  chainScript = if cfg.enable && cfg.hook.chain != null then cfg.hook.program.text else null;
  maintenanceScript = if maintenanceOn then cfg.maintenance.script.text else null;
  options = optionPaths "services.nix-ledger" options.services.nix-ledger;
}
// (
  if platform == "nixos" then
    {
      tmpfiles = builtins.filter (rule: builtins.match ".*nix-ledger.*" rule != null) config.systemd.tmpfiles.rules;
      service =
        if config.systemd.services ? nix-ledger-maintenance then
          let
            service = config.systemd.services.nix-ledger-maintenance;
          in
          {
            inherit (service) description;
            serviceConfig = pick [
              "Type"
              "User"
              "ExecStart"
              "Nice"
              "IOSchedulingClass"
            ] service.serviceConfig;
          }
        else
          null;
      timer =
        if config.systemd.timers ? nix-ledger-maintenance then
          {
            inherit (config.systemd.timers.nix-ledger-maintenance) wantedBy timerConfig;
          }
        else
          null;
    }
  else
    {
      activation = config.system.activationScripts.extraActivation.text;
      launchd =
        if config.launchd.daemons ? nix-ledger-maintenance then
          let
            daemon = config.launchd.daemons.nix-ledger-maintenance;
          in
          {
            command = toString daemon.command;
            serviceConfig = pick [
              "UserName"
              "StartCalendarInterval"
              "RunAtLoad"
              "StandardOutPath"
              "StandardErrorPath"
              "ProcessType"
              "LowPriorityIO"
              "Nice"
              "ProgramArguments"
              "Label"
            ] daemon.serviceConfig;
          }
        else
          null;
    }
)
