# For the real nix-darwin test only, when a nix-darwin newer than the nixpkgs checkout
# is evaluated (with a newer `lib`, see real-darwin.nix): what that nix-darwin takes
# from pkgs and the older nixpkgs lacks, approximated. Nothing here is built.
final: prev: {
  # nixpkgs 25.05; substituteAll is its predecessor.
  replaceVarsWith =
    prev.replaceVarsWith or (
      {
        name,
        src,
        replacements,
        ...
      }@args:
      final.substituteAll (removeAttrs args [ "replacements" ] // replacements)
    );
}
