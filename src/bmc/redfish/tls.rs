//! TLS trust for one BMC: web PKI roots by default, a CA bundle, a pinned
//! certificate fingerprint, or (explicitly, loudly) no verification.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use super::options::TlsTrust;
use crate::bmc::BmcError;

/// Applies `trust` to a client builder.
pub fn configure(
    builder: reqwest::ClientBuilder,
    trust: &TlsTrust,
) -> Result<reqwest::ClientBuilder, BmcError> {
    let builder = builder.use_rustls_tls();
    Ok(match trust {
        TlsTrust::WebPki => builder,
        TlsTrust::CaFile(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                BmcError::Unsupported(format!(
                    "Redfish option `ca_file`: cannot read {}: {e}",
                    path.display()
                ))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                BmcError::Unsupported(format!(
                    "Redfish option `ca_file`: {} is not a PEM bundle: {e}",
                    path.display()
                ))
            })?;
            if certs.is_empty() {
                return Err(BmcError::Unsupported(format!(
                    "Redfish option `ca_file`: {} holds no certificate",
                    path.display()
                )));
            }
            certs
                .into_iter()
                .fold(builder.tls_built_in_root_certs(false), |b, c| {
                    b.add_root_certificate(c)
                })
        }
        TlsTrust::Pinned(fp) => builder.use_preconfigured_tls(pinned_config(*fp)?),
        TlsTrust::Insecure => builder.danger_accept_invalid_certs(true),
    })
}

fn pinned_config(fingerprint: [u8; 32]) -> Result<rustls::ClientConfig, BmcError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| BmcError::Protocol(format!("TLS configuration: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCert {
            fingerprint,
            provider,
        }))
        .with_no_client_auth();
    Ok(config)
}

/// Accepts exactly one end-entity certificate, by the SHA-256 of its DER, and
/// still checks that the server holds its private key (handshake signatures).
/// For BMCs whose self-signed certificate is its own CA (which web PKI
/// validation rejects as an end-entity certificate).
#[derive(Debug)]
struct PinnedCert {
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
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if got == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the certificate's SHA-256 does not match the pinned cert_sha256".into(),
            ))
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
