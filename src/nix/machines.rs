//! Remote builders as Nix names them: a store URI from the `builders` setting
//! (`ssh-ng://user@host?remote-store=…`), and the shorter forms of it that copies and
//! people use.

/// The URI without its query string: `ssh-ng://b?remote-store=…` → `ssh-ng://b`, what
/// Nix's copy activities name a builder by.
pub fn host_of(machine: &str) -> &str {
    machine.split('?').next().unwrap_or(machine)
}

/// What people call a builder: the host, without scheme, user, port or query
/// (`ssh-ng://root@10.0.0.2:2222?x=1` → `10.0.0.2`).
pub fn label(machine: &str) -> &str {
    let rest = host_of(machine);
    let rest = rest.split_once("://").map_or(rest, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let rest = rest.split('/').next().unwrap_or(rest);
    match rest.rsplit_once(':') {
        // An IPv6 address in brackets keeps its colons.
        Some((host, port))
            if port.chars().all(|c| c.is_ascii_digit()) && !host.ends_with(']')
                || host.starts_with('[') && host.ends_with(']') =>
        {
            host
        }
        _ => rest,
    }
}

/// Whether `name` names `machine`: its whole URI, the URI without the query, or its label.
pub fn names(machine: &str, name: &str) -> bool {
    machine == name || host_of(machine) == name || label(machine) == name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_builder_is_named_by_its_uri_its_host_uri_or_its_host() {
        let m = "ssh-ng://nlb?remote-store=local?root=/tmp/x&remote-program=/tmp/d";
        assert_eq!(host_of(m), "ssh-ng://nlb");
        assert_eq!(label(m), "nlb");
        assert_eq!(label("ssh://root@10.0.0.2:2222"), "10.0.0.2");
        assert_eq!(label("ssh-ng://[fe80::1]:22"), "[fe80::1]");
        assert_eq!(label("builder"), "builder");
        assert!(names(m, "nlb") && names(m, "ssh-ng://nlb") && names(m, m));
        assert!(!names(m, "nl"));
    }
}
