mod nix_module;
