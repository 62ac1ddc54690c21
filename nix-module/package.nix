# nix-ledger as a callPackage-able derivation. The flake (packages, overlay) and the
# NixOS / nix-darwin modules all build it from this one file, so flake and non-flake
# users get the same package:
#
#   pkgs.callPackage ./nix-module/package.nix { }
#
# The crate needs Rust >= 1.85 (`rust-version` in Cargo.toml) and a cargo that reads
# Cargo.lock version 4, i.e. a nixpkgs from 25.05 or later; with an older nixpkgs cargo
# stops with an error naming the required rustc version.
{
  lib,
  stdenv,
  rustPlatform,
  libiconv,
}:

let
  # Read name and version from Cargo.toml so a version bump is a one-file change.
  manifest = (lib.importTOML ../Cargo.toml).package;

  # Everything at the top of the repository is part of the crate except what only Nix,
  # CI or humans read. Excluding (rather than listing what to include) keeps the build
  # working when the crate gains a directory such as benches/ that Cargo.toml names;
  # excluding the Nix files keeps an edit to the module from rebuilding the package.
  excluded = [
    ".git"
    "target"
    "nix-module"
    "docs"
    "flake.nix"
    "flake.lock"
    "default.nix"
  ];
  src = lib.cleanSourceWith {
    src = ../.;
    filter =
      path: type:
      let
        relative = lib.removePrefix (toString ../. + "/") (toString path);
      in
      !(builtins.elem relative excluded) && !(lib.hasPrefix "result" relative);
  };
in
rustPlatform.buildRustPackage {
  pname = manifest.name;
  inherit (manifest) version;
  inherit src;

  cargoLock.lockFile = ../Cargo.lock;

  # rustc links libiconv on Darwin; older nixpkgs did not add it by itself.
  buildInputs = lib.optionals stdenv.hostPlatform.isDarwin [ libiconv ];

  # tests/integration/nix_module.rs runs nix-instantiate on the files in this
  # repository; the build sandbox has neither Nix nor a writable store, so those tests
  # run in CI and by hand, not here.
  checkFlags = [ "--skip=nix_module" ];

  meta = {
    description = manifest.description;
    license = [
      lib.licenses.mit
      lib.licenses.asl20
    ];
    # `lib.getExe` gives the CLI; the module takes the hook binary by name.
    mainProgram = "nix-ledger";
    platforms = lib.platforms.unix;
  };
}
