# A small stand-in for nixpkgs' `lib`, for tests only: CI has Debian's Nix but no
# nixpkgs and no network. It implements what nix-module/*.nix, flake.nix and the test
# harness use, with the semantics of nixpkgs' lib/modules.nix and lib/types.nix for
# that subset (mkIf/mkMerge/mkOverride/mkOrder, priorities, type checks, conflicting
# definitions, definitions of undeclared options), so that mistakes the real module
# system rejects are rejected here too. tests/nix/real-*.nix and the "real" tests in
# tests/integration/nix_module.rs check the modules against the real thing when a
# checkout is available.
let
  inherit (builtins)
    all
    any
    attrNames
    concatMap
    concatStringsSep
    elem
    filter
    foldl'
    functionArgs
    genericClosure
    head
    isAttrs
    isBool
    isFunction
    isInt
    isList
    isPath
    isString
    length
    listToAttrs
    mapAttrs
    match
    replaceStrings
    sort
    tail
    typeOf
    ;

  lib = rec {
    # --- lists, strings, attribute sets -------------------------------------------
    inherit (builtins)
      elem
      filter
      any
      all
      concatStringsSep
      mapAttrs
      attrNames
      ;
    id = x: x;
    optional = cond: x: if cond then [ x ] else [ ];
    optionals = cond: xs: if cond then xs else [ ];
    optionalString = cond: s: if cond then s else "";
    optionalAttrs = cond: as: if cond then as else { };
    unique = foldl' (acc: x: if elem x acc then acc else acc ++ [ x ]) [ ];
    concatMapStrings = f: xs: concatStringsSep "" (map f xs);
    concatMapStringsSep = sep: f: xs: concatStringsSep sep (map f xs);
    hasPrefix =
      prefix: s: builtins.substring 0 (builtins.stringLength prefix) s == prefix;
    removePrefix =
      prefix: s:
      if hasPrefix prefix s then
        builtins.substring (builtins.stringLength prefix) (builtins.stringLength s) s
      else
        s;
    splitString = sep: s: filter isString (builtins.split (escapeRegex sep) s);
    escapeRegex =
      let
        special = stringToCharacters "\\[{()^$?*+|.";
      in
      replaceStrings special (map (c: "\\${c}") special);
    stringToCharacters =
      s: builtins.genList (i: builtins.substring i 1 s) (builtins.stringLength s);
    escapeShellArg =
      arg:
      let
        s = toString arg;
      in
      if match "[[:alnum:],._+:@%/-]+" s == null then
        "'${replaceStrings [ "'" ] [ "'\\''" ] s}'"
      else
        s;
    escapeShellArgs = concatMapStringsSep " " escapeShellArg;
    genAttrs =
      names: f:
      listToAttrs (
        map (name: {
          inherit name;
          value = f name;
        }) names
      );
    filterAttrs =
      pred: set:
      listToAttrs (
        concatMap (
          name:
          if pred name set.${name} then
            [
              {
                inherit name;
                value = set.${name};
              }
            ]
          else
            [ ]
        ) (attrNames set)
      );
    isDerivation = x: isAttrs x && x.type or null == "derivation";
    isStringLike = x: isString x || isPath x || (isAttrs x && (x ? outPath || x ? __toString));
    importTOML = file: builtins.fromTOML (builtins.readFile file);
    showOption = concatStringsSep ".";

    # --- sources, licences, platforms (only what package.nix reads) --------------
    cleanSourceWith =
      {
        src,
        filter,
        name ? "source",
      }:
      {
        # Not copied to the store: the tests look at the filter, not the files.
        outPath = toString src;
        inherit filter name;
        origSrc = src;
      };
    licenses = {
      mit = {
        spdxId = "MIT";
      };
      asl20 = {
        spdxId = "Apache-2.0";
      };
    };
    platforms.unix = [
      "x86_64-linux"
      "aarch64-linux"
      "x86_64-darwin"
      "aarch64-darwin"
    ];

    # --- option declarations ------------------------------------------------------
    mkOption = attrs: attrs // { _type = "option"; };
    mkEnableOption =
      name:
      mkOption {
        type = types.bool;
        default = false;
        example = true;
        description = "Whether to enable ${name}.";
      };
    literalExpression = text: {
      _type = "literalExpression";
      inherit text;
    };
    literalMD = text: {
      _type = "literalMD";
      inherit text;
    };

    # --- properties of definitions ------------------------------------------------
    mkIf = condition: content: {
      _type = "if";
      inherit condition content;
    };
    mkMerge = contents: {
      _type = "merge";
      inherit contents;
    };
    mkOverride = priority: content: {
      _type = "override";
      inherit priority content;
    };
    mkOptionDefault = mkOverride 1500;
    mkDefault = mkOverride 1000;
    mkForce = mkOverride 50;
    mkOrder = priority: content: {
      _type = "order";
      inherit priority content;
    };
    mkBefore = mkOrder 500;
    mkAfter = mkOrder 1500;

    # --- types ----------------------------------------------------------------------
    mergeEqualOption =
      loc: defs:
      let
        first = head defs;
      in
      if all (def: def.value == first.value) defs then
        first.value
      else
        throw "The option `${showOption loc}' has conflicting definition values: ${
          concatMapStringsSep ", " (def: "${builtins.toJSON (toString def.value)} in ${def.file}") defs
        }";

    mergeOneOption =
      loc: defs:
      if length defs == 1 then
        (head defs).value
      else
        throw "The option `${showOption loc}' is defined multiple times (in ${
          concatMapStringsSep ", " (def: def.file) defs
        }) but takes one definition.";

    mkOptionType =
      {
        name,
        check ? (_: true),
        merge ? mergeEqualOption,
        nestedTypes ? { },
      }:
      {
        _type = "option-type";
        inherit
          name
          check
          merge
          nestedTypes
          ;
      };

    types = rec {
      bool = mkOptionType {
        name = "bool";
        check = isBool;
      };
      int = mkOptionType {
        name = "int";
        check = isInt;
      };
      ints.positive = mkOptionType {
        name = "positiveInt";
        check = x: isInt x && x > 0;
      };
      str = mkOptionType {
        name = "str";
        check = isString;
      };
      singleLineStr = mkOptionType {
        name = "singleLineStr";
        check = s: isString s && match "[^\n]*\n?" s != null;
      };
      lines = mkOptionType {
        name = "lines";
        check = isString;
        merge = loc: defs: concatMapStringsSep "\n" (def: def.value) defs;
      };
      path = mkOptionType {
        name = "path";
        check = x: isStringLike x && builtins.substring 0 1 (toString x) == "/";
      };
      package = mkOptionType {
        name = "package";
        check = x: isDerivation x || (isString x && hasPrefix builtins.storeDir x);
        merge = mergeOneOption;
      };
      enum =
        values:
        mkOptionType {
          name = "enum [${concatMapStringsSep " " builtins.toJSON values}]";
          check = v: elem v values;
        };
      nullOr =
        t:
        mkOptionType {
          name = "nullOr ${t.name}";
          check = x: x == null || t.check x;
          merge =
            loc: defs:
            let
              nulls = filter (def: def.value == null) defs;
            in
            if length nulls == length defs then
              null
            else if nulls != [ ] then
              throw "The option `${showOption loc}' is defined both null and not null."
            else
              t.merge loc defs;
          nestedTypes.elemType = t;
        };
      either =
        a: b:
        mkOptionType {
          name = "either ${a.name} ${b.name}";
          check = x: a.check x || b.check x;
          merge =
            loc: defs:
            if all (def: a.check def.value) defs then
              a.merge loc defs
            else if all (def: b.check def.value) defs then
              b.merge loc defs
            else
              mergeOneOption loc defs;
        };
      listOf =
        t:
        mkOptionType {
          name = "listOf ${t.name}";
          check = isList;
          merge =
            loc: defs:
            concatMap (
              def:
              concatMap (
                element:
                let
                  merged = mergeDefinitions (loc ++ [ "[entry]" ]) t [
                    {
                      inherit (def) file;
                      value = element;
                    }
                  ];
                in
                optional merged.isDefined merged.value
              ) def.value
            ) defs;
          nestedTypes.elemType = t;
        };
      attrsOf =
        t:
        mkOptionType {
          name = "attrsOf ${t.name}";
          check = isAttrs;
          merge =
            loc: defs:
            let
              names = unique (concatMap (def: attrNames def.value) defs);
              merged = map (name: {
                inherit name;
                result = mergeDefinitions (loc ++ [ name ]) t (
                  concatMap (
                    def:
                    optional (def.value ? ${name}) {
                      inherit (def) file;
                      value = def.value.${name};
                    }
                  ) defs
                );
              }) names;
            in
            listToAttrs (
              map (m: {
                inherit (m) name;
                value = m.result.value;
              }) (filter (m: m.result.isDefined) merged)
            );
          nestedTypes.elemType = t;
        };
      # As nixpkgs' `anything`: attribute sets merge recursively, lists and
      # string-like sets (packages) take one definition, anything else must be equal.
      anything = mkOptionType {
        name = "anything";
        merge =
          loc: defs:
          let
            values = map (def: def.value) defs;
            kinds = unique (
              map (
                v:
                if isAttrs v && isStringLike v then
                  "stringCoercibleSet"
                else if isAttrs v then
                  "set"
                else
                  typeOf v
              ) values
            );
            kind = if length kinds == 1 then head kinds else "mixed";
          in
          if kind == "set" then
            (attrsOf anything).merge loc defs
          else if kind == "list" then
            (if length defs > 1 then mergeOneOption loc defs else (listOf anything).merge loc defs)
          else if kind == "stringCoercibleSet" then
            mergeOneOption loc defs
          else
            mergeEqualOption loc defs;
      };
    };

    # --- merging definitions (lib/modules.nix) ------------------------------------
    dischargeProperties =
      def:
      if def._type or "" == "merge" then
        concatMap dischargeProperties def.contents
      else if def._type or "" == "if" then
        (
          if isBool def.condition then
            (if def.condition then dischargeProperties def.content else [ ])
          else
            throw "mkIf called with a non-Boolean condition"
        )
      else
        [ def ];

    # Returns { values; isDefined; value; highestPrio; } for the definitions of one
    # option (each { file; value; }), as lib.modules.mergeDefinitions.
    mergeDefinitions =
      loc: type: defs:
      let
        discharged = concatMap (
          def:
          map (value: {
            inherit (def) file;
            inherit value;
          }) (dischargeProperties def.value)
        ) defs;
        prioOf = def: if def.value._type or "" == "override" then def.value.priority else 100;
        highestPrio = foldl' (p: def: if prioOf def < p then prioOf def else p) 9999 discharged;
        strip =
          def: if def.value._type or "" == "override" then def // { value = def.value.content; } else def;
        kept = map strip (filter (def: prioOf def == highestPrio) discharged);
        ordered =
          if any (def: def.value._type or "" == "order") kept then
            map (def: if def.value._type or "" == "order" then def // { value = def.value.content; } else def) (
              sort (a: b: (a.value.priority or 1000) < (b.value.priority or 1000)) kept
            )
          else
            kept;
        invalid = filter (def: !type.check def.value) ordered;
      in
      rec {
        values = ordered;
        inherit highestPrio;
        isDefined = values != [ ];
        value =
          if invalid != [ ] then
            throw "A definition for option `${showOption loc}' is not of type `${type.name}' (in ${(head invalid).file})."
          else
            type.merge loc values;
      };

    # Definitions for a node above options: push mkIf/mkMerge/mkOverride down to
    # the attributes, as lib.modules.pushDownProperties.
    pushDownProperties =
      cfg:
      if cfg._type or "" == "merge" then
        concatMap pushDownProperties cfg.contents
      else if cfg._type or "" == "if" then
        map (mapAttrs (_: mkIf cfg.condition)) (pushDownProperties cfg.content)
      else if cfg._type or "" == "override" then
        map (mapAttrs (_: mkOverride cfg.priority)) (pushDownProperties cfg.content)
      else
        [ cfg ];

    isOption = x: isAttrs x && x._type or "" == "option";

    # --- evalModules ------------------------------------------------------------------
    # modules: paths, functions or attribute sets, as for lib.evalModules;
    # specialArgs: extra module arguments (the tests pass `pkgs` here).
    # Returns { config; options; }; leaves of `options` carry value, isDefined,
    # definitionsWithLocations (after mkIf/mkMerge/mkOverride, as in nixpkgs).
    evalModules =
      {
        modules,
        specialArgs ? { },
      }:
      let
        moduleArgs = specialArgs // {
          inherit lib config options;
        };

        # One module, normalised to { key; file; imports; options; config; }.
        load =
          parentKey: index: m:
          let
            fromFile = isPath m || isString m;
            key = if fromFile then toString m else "${parentKey}:anon-${toString index}";
            imported = if fromFile then import m else m;
            body =
              if isFunction imported then
                imported (mapAttrs (name: _: moduleArgs.${name}) (functionArgs imported))
              else
                imported;
            file = body._file or (if fromFile then toString m else key);
            structured = body ? options || body ? config;
            unknown = filter (
              n:
              !(elem n [
                "_file"
                "key"
                "imports"
                "options"
                "config"
                "meta"
              ])
            ) (attrNames body);
          in
          if structured && unknown != [ ] then
            throw "Module `${file}' has an unsupported attribute `${head unknown}'."
          else
            {
              inherit key file;
              imports = body.imports or [ ];
              options = body.options or { };
              config =
                if structured then
                  body.config or { }
                else
                  removeAttrs body [
                    "_file"
                    "key"
                    "imports"
                    "meta"
                  ];
            };

        loaded = genericClosure {
          startSet = builtins.genList (i: load "<top>" i (builtins.elemAt modules i)) (length modules);
          operator =
            m: builtins.genList (i: load m.key i (builtins.elemAt m.imports i)) (length m.imports);
        };

        mergeDeclarations =
          path: a: b:
          mapAttrs (
            name: _:
            if a ? ${name} && b ? ${name} then
              (
                if isOption a.${name} || isOption b.${name} then
                  throw "The option `${showOption (path ++ [ name ])}' is declared twice."
                else
                  mergeDeclarations (path ++ [ name ]) a.${name} b.${name}
              )
            else
              a.${name} or b.${name}
          ) (a // b);

        declarations = foldl' (acc: m: mergeDeclarations [ ] acc m.options) { } loaded;

        evalOption =
          loc: opt: defs:
          let
            withDefault =
              optional (opt ? default) {
                file = "default of ${showOption loc}";
                value = mkOptionDefault opt.default;
              }
              ++ defs;
            merged = mergeDefinitions loc opt.type withDefault;
          in
          opt
          // {
            value =
              # As nixpkgs: the default counts, so setting a read-only option with a
              # default at all is an error.
              if opt.readOnly or false && length withDefault > 1 then
                throw "The option `${showOption loc}' is read-only, but it is set."
              else if merged.isDefined then
                merged.value
              else
                throw "The option `${showOption loc}' is used but not defined.";
            inherit (merged) isDefined highestPrio;
            definitionsWithLocations = merged.values;
            definitions = map (def: def.value) merged.values;
          };

        # Walk the declarations, carrying the definitions that reach each node.
        evalNode =
          path: decls: defs:
          let
            pushed = concatMap (
              def:
              map (value: {
                inherit (def) file;
                inherit value;
              }) (pushDownProperties def.value)
            ) defs;
            undeclared = filter (name: !(decls ? ${name})) (unique (concatMap (def: attrNames def.value) pushed));
            childDefs =
              name:
              concatMap (
                def:
                optional (def.value ? ${name}) {
                  inherit (def) file;
                  value = def.value.${name};
                }
              ) pushed;
          in
          if undeclared != [ ] then
            throw "The option `${showOption (path ++ [ (head undeclared) ])}' does not exist (defined in ${
              concatMapStringsSep ", " (def: def.file) (
                filter (def: def.value ? ${head undeclared}) pushed
              )
            })."
          else
            mapAttrs (
              name: decl:
              if isOption decl then
                evalOption (path ++ [ name ]) decl (childDefs name)
              else
                evalNode (path ++ [ name ]) decl (childDefs name)
            ) decls;

        options = evalNode [ ] declarations (
          map (m: {
            inherit (m) file;
            value = m.config;
          }) loaded
        );

        valuesOf = node: if isOption node then node.value else mapAttrs (_: valuesOf) node;
        config = valuesOf options;
      in
      {
        inherit config options;
      };
  };
in
lib
