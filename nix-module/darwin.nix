# services.nix-ledger for nix-darwin. Without flakes:
#   imports = [ /path/to/nix-ledger/nix-module/darwin.nix ];
# With flakes: nix-ledger.darwinModules.default (this file).
{
  config,
  lib,
  ...
}:

let
  cfg = config.services.nix-ledger;
  logFile = "/var/log/nix-ledger-maintenance.log";
in
{
  imports = [ ./common.nix ];

  options.services.nix-ledger.maintenance.interval = lib.mkOption {
    type = lib.types.listOf (lib.types.attrsOf lib.types.int);
    default = [
      {
        Hour = 3;
        Minute = 45;
      }
    ];
    example = [ { Minute = 0; } ];
    description = ''
      When the maintenance job runs: launchd's StartCalendarInterval, a list of
      attribute sets with Minute, Hour, Day, Weekday, Month (missing ones are
      wildcards), as for `nix.gc.interval`. launchd runs a job missed during sleep
      when the machine wakes.
    '';
  };

  config = lib.mkIf cfg.enable (
    lib.mkMerge [
      {
        # nix-darwin runs only the activation scripts it knows by name;
        # extraActivation is one of them, and runs before launchd jobs are loaded.
        # macOS has no group "root"; 0 is wheel.
        system.activationScripts.extraActivation.text = lib.mkAfter ''
          # nix-ledger: the system spool, appended to by nix-ledger-hook as root,
          # read by every user's nix-ledger.
          mkdir -p ${cfg.spoolDir}
          chown 0:0 ${cfg.spoolDir}
          chmod 0755 ${cfg.spoolDir}
          if [ ! -e ${cfg.spoolDir}/spool.jsonl ]; then
            touch ${cfg.spoolDir}/spool.jsonl
          fi
          chown 0:0 ${cfg.spoolDir}/spool.jsonl
          chmod 0644 ${cfg.spoolDir}/spool.jsonl
        '';
      }

      (lib.mkIf cfg.maintenance.enable {
        launchd.daemons.nix-ledger-maintenance = {
          # `command` rather than ProgramArguments: nix-darwin wraps it, and recent
          # versions first wait for the /nix volume to be mounted (wait4path).
          command = "${cfg.maintenance.script}";
          serviceConfig = {
            UserName = cfg.maintenance.user;
            StartCalendarInterval = cfg.maintenance.interval;
            RunAtLoad = false;
            # launchd creates the log owned by UserName (launchd.plist(5)).
            StandardOutPath = logFile;
            StandardErrorPath = logFile;
            # Bookkeeping; it must not slow down builds running at the same time.
            ProcessType = "Background";
            LowPriorityIO = true;
            Nice = 19;
          };
        };
      })
    ]
  );
}
