# services.nix-ledger for NixOS. Without flakes:
#   imports = [ /path/to/nix-ledger/nix-module/nixos.nix ];
# With flakes: nix-ledger.nixosModules.default (this file).
{
  config,
  lib,
  ...
}:

let
  cfg = config.services.nix-ledger;
in
{
  imports = [ ./common.nix ];

  options.services.nix-ledger.maintenance.dates = lib.mkOption {
    type = lib.types.str;
    default = "daily";
    example = "hourly";
    description = ''
      When the maintenance job runs: a systemd calendar expression (see
      {manpage}`systemd.time(7)`), as for `nix.gc.dates`. Runs missed while the
      machine was off are caught up at the next boot.
    '';
  };

  config = lib.mkIf cfg.enable (
    lib.mkMerge [
      {
        # Created at boot and on every switch, before nix-daemon could run the hook.
        # "f" creates the spool with mode 0644 if missing, so it is world-readable
        # even if the daemon's umask is stricter; it never truncates it.
        systemd.tmpfiles.rules = [
          "d ${cfg.spoolDir} 0755 root root -"
          "f ${cfg.spoolDir}/spool.jsonl 0644 root root -"
        ];
      }

      (lib.mkIf cfg.maintenance.enable {
        systemd.services.nix-ledger-maintenance = {
          description =
            if cfg.maintenance.user == "root" then
              "nix-ledger: the system's ledger, spool rotation and retention"
            else
              "nix-ledger: ingest the system spool into ${cfg.maintenance.user}'s ledger";
          # The spool directory comes from tmpfiles.
          after = [ "systemd-tmpfiles-setup.service" ];
          serviceConfig = {
            Type = "oneshot";
            User = cfg.maintenance.user;
            ExecStart = "${cfg.maintenance.script}";
            # Bookkeeping; it must not slow down builds running at the same time.
            Nice = 19;
            IOSchedulingClass = "idle";
          };
        };

        systemd.timers.nix-ledger-maintenance = {
          description = "Periodic nix-ledger maintenance";
          wantedBy = [ "timers.target" ];
          timerConfig = {
            OnCalendar = cfg.maintenance.dates;
            Persistent = true;
            # Machines sharing a schedule (and a binary cache) need not all start at once.
            RandomizedDelaySec = "15min";
          };
        };
      })
    ]
  );
}
