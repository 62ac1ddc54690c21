//! TLS to the hub as libpq's `sslmode` means it, with rustls (pure Rust: CI needs no
//! OpenSSL headers): `prefer` and `require` encrypt without verifying the server (as
//! libpq does, unless `require` was given a root certificate), `verify-ca` checks the
//! chain against the root certificate, `verify-full` the host name too.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{
    ring, verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::conninfo::{ConnInfo, SslMode};
use crate::{Error, Result};

/// How the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Nothing,
    Chain,
    ChainAndName,
}

/// The rustls configuration for `info`, or `None` for `sslmode=disable`.
pub fn client_config(info: &ConnInfo) -> Result<Option<ClientConfig>> {
    let check = match info.sslmode {
        SslMode::Disable => return Ok(None),
        SslMode::Allow | SslMode::Prefer => Check::Nothing,
        // libpq: "if a root CA file exists, the server certificate will be verified as
        // if verify-ca was specified" — here when one was named.
        SslMode::Require if info.sslrootcert_named => Check::Chain,
        SslMode::Require => Check::Nothing,
        SslMode::VerifyCa => Check::Chain,
        SslMode::VerifyFull => Check::ChainAndName,
    };
    let provider = Arc::new(ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Hub(format!("TLS set-up: {e}")))?;
    let config = match check {
        Check::ChainAndName => builder
            .with_root_certificates(roots(info)?)
            .with_no_client_auth(),
        Check::Nothing | Check::Chain => {
            let roots = match check {
                Check::Chain => Some(Arc::new(roots(info)?)),
                _ => None,
            };
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Verifier {
                    roots,
                    algorithms: provider.signature_verification_algorithms,
                }))
                .with_no_client_auth()
        }
    };
    Ok(Some(config))
}

/// The root certificates `sslrootcert` names (or `~/.postgresql/root.crt`).
fn roots(info: &ConnInfo) -> Result<RootCertStore> {
    let path = info.sslrootcert.as_ref().ok_or_else(|| {
        Error::Usage(format!(
            "sslmode {:?} needs a root certificate: set sslrootcert or PGSSLROOTCERT, or create ~/.postgresql/root.crt",
            info.sslmode
        ))
    })?;
    let mut store = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| Error::Usage(format!("sslrootcert {}: {e}", path.display())))?;
    for cert in certs {
        let cert =
            cert.map_err(|e| Error::Usage(format!("sslrootcert {}: {e}", path.display())))?;
        store
            .add(cert)
            .map_err(|e| Error::Usage(format!("sslrootcert {}: {e}", path.display())))?;
    }
    if store.is_empty() {
        return Err(Error::Usage(format!(
            "sslrootcert {}: no certificate in it",
            path.display()
        )));
    }
    Ok(store)
}

/// Checks the chain against `roots` when given, never the name; signatures always (the
/// handshake's own integrity does not depend on the mode).
#[derive(Debug)]
struct Verifier {
    roots: Option<Arc<RootCertStore>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        if let Some(roots) = &self.roots {
            let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_cert_signed_by_trust_anchor(
                &cert,
                roots,
                intermediates,
                now,
                self.algorithms.all,
            )?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
