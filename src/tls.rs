//! TLS for the appliance: a self-signed certificate generated at first start (or one the
//! administrator provides), a rustls server configuration limited to TLS 1.2 and 1.3 with the
//! ring provider's suites (all AEAD with forward secrecy), and a client verifier that pins one
//! certificate by its SHA-256 fingerprint, for the CLI, the console and tests.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};

use crate::crypto::sha256;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot generate the certificate: {0}")]
    Generate(String),
    #[error("{path}: {problem}")]
    File { path: String, problem: String },
    #[error("TLS configuration refused: {0}")]
    Config(#[from] rustls::Error),
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A generated certificate and key, PEM encoded.
pub struct Generated {
    pub cert_pem: String,
    pub key_pem: String,
    pub fingerprint: String,
}

/// Generates a self-signed ECDSA P-256 certificate for localhost, 127.0.0.1, ::1 and the
/// configured names, valid for ten years from yesterday.
pub fn generate_self_signed(hostnames: &[String]) -> Result<Generated, TlsError> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    for h in hostnames {
        if !names.contains(h) {
            names.push(h.clone());
        }
    }
    let g = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let mut params = rcgen::CertificateParams::new(names).map_err(g)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Custos appliance");
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Custos");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
    let key = rcgen::KeyPair::generate().map_err(g)?;
    let cert = params.self_signed(&key).map_err(g)?;
    Ok(Generated {
        fingerprint: fingerprint(cert.der()),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Checks an imported certificate chain and private key (PEM): both parse, and the key is the
/// one the first certificate names. Returns the certificate's fingerprint.
pub fn check_pair(cert_pem: &str, key_pem: &str) -> Result<String, TlsError> {
    let bad = |problem: String| TlsError::File {
        path: "the imported certificate".into(),
        problem,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("cannot read the certificates: {e}")))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE block was found".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| bad(format!("cannot read the private key: {e}")))?;
    let fp = fingerprint(certs[0].as_ref());
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| bad(format!("the private key is not usable: {e}")))?;
    rustls::sign::CertifiedKey::new(certs, signing)
        .keys_match()
        .map_err(|e| {
            bad(format!(
                "the private key does not belong to the certificate ({e})"
            ))
        })?;
    Ok(fp)
}

/// `AA:BB:…`, the SHA-256 fingerprint of a certificate's DER encoding as browsers show it.
pub fn fingerprint(der: &[u8]) -> String {
    sha256(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses a fingerprint in `AA:BB:…` or plain hex form.
pub fn parse_fingerprint(s: &str) -> Option<[u8; 32]> {
    let hexed: String = s.chars().filter(|c| *c != ':').collect();
    hex::decode(hexed.to_ascii_lowercase())
        .ok()?
        .try_into()
        .ok()
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |problem: String| TlsError::File {
        path: path.display().to_string(),
        problem,
    };
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(format!("cannot read certificates: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("malformed PEM: {e}")))?;
    if certs.is_empty() {
        return Err(bad("holds no certificate".into()));
    }
    Ok(certs)
}

pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        path: path.display().to_string(),
        problem: format!("cannot read a private key: {e}"),
    })
}

/// The server configuration: TLS 1.3 and 1.2 only, HTTP/1.1 over ALPN.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs(cert)?;
    let key = load_key(key)?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Accepts exactly one server certificate, named by its SHA-256 fingerprint; the handshake
/// signatures are still verified with it. Host names do not matter: the pin is stronger.
#[derive(Debug)]
pub struct PinnedCert {
    fingerprint: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if sha256(end_entity.as_ref()) == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "server certificate {} is not the pinned one",
                fingerprint(end_entity.as_ref())
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client configuration that trusts only the certificate with this fingerprint.
pub fn pinned_client_config(fingerprint: [u8; 32]) -> Result<Arc<ClientConfig>, TlsError> {
    pinned_client_config_with(
        fingerprint,
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    )
}

/// The same, limited to the given protocol versions.
pub fn pinned_client_config_with(
    fingerprint: [u8; 32],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let mut cfg = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCert {
            fingerprint,
            provider,
        }))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_round_trip() {
        let g = generate_self_signed(&["custos.example".into()]).unwrap();
        let fp = parse_fingerprint(&g.fingerprint).unwrap();
        assert_eq!(fingerprint_hex(&fp), g.fingerprint);
        assert!(parse_fingerprint("zz").is_none());
    }

    fn fingerprint_hex(b: &[u8; 32]) -> String {
        b.iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}
