//! TLS on Mandate's own listener (`[tls]`), and mutual TLS with X.509-SVIDs (SPIFFE).
//!
//! With `[tls]`, `mandate serve` speaks HTTPS. When a `[[workload.spiffe]]` trust domain also
//! names an `x509_bundle_file` (its X.509 authorities, PEM), the listener asks clients for a
//! certificate (optional: clients without one authenticate as before). A certificate is accepted
//! only when it is an X.509-SVID: exactly one URI SAN, a SPIFFE ID, whose trust domain is
//! configured, and whose chain ends at one of *that* trust domain's authorities (a CA of one
//! trust domain cannot vouch for another's IDs). The verified chain reaches the handlers as
//! [`ClientCertificates`]; [`spiffe_id`] names the workload, and
//! [`crate::oauth::client_auth`] binds it to an agent (`tls_client_auth`, RFC 8705 §2.1).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

pub use mandate_gateway::serve::ClientCertificates;

use crate::config::{SpiffeTrustDomain, Tls};

/// The longest SPIFFE ID accepted (the SPIFFE spec's limit is 2048 bytes).
const MAX_SPIFFE_ID: usize = 2048;

/// The rustls server configuration for `tls`, asking for X.509-SVIDs of the trust domains in
/// `spiffe` that have an `x509_bundle_file`.
pub fn server_config(
    tls: &Tls,
    spiffe: &[SpiffeTrustDomain],
) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain = read_certs(&tls.cert_file, "`tls.cert_file`")?;
    let key = PrivateKeyDer::from_pem_file(&tls.key_file).map_err(|e| {
        format!(
            "`tls.key_file` `{}`: no private key could be read ({e})",
            tls.key_file.display()
        )
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?;
    let mut domains = HashMap::new();
    for d in spiffe {
        let Some(file) = &d.x509_bundle_file else {
            continue;
        };
        let what = format!("trust domain `{}`: `x509_bundle_file`", d.trust_domain);
        let mut roots = RootCertStore::empty();
        for cert in read_certs(file, &what)? {
            roots
                .add(cert)
                .map_err(|e| format!("{what} `{}`: {e}", file.display()))?;
        }
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("{what}: {e}"))?;
        domains.insert(d.trust_domain.clone(), verifier);
    }
    let builder = if domains.is_empty() {
        builder.with_no_client_auth()
    } else {
        builder.with_client_cert_verifier(Arc::new(SvidVerifier { domains, provider }))
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("`tls.cert_file` and `tls.key_file`: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_certs(file: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{what} `{}`: {e}", file.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} `{}` holds no PEM certificate",
            file.display()
        ));
    }
    Ok(certs)
}

/// The SPIFFE ID of an X.509-SVID: its one URI SAN, a `spiffe://` URL with a trust domain and a
/// path, no query, fragment, port or user info (SPIFFE X509-SVID §2).
pub fn spiffe_id(cert: &CertificateDer<'_>) -> Result<String, String> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|_| "the client certificate could not be parsed".to_owned())?;
    let san = parsed
        .subject_alternative_name()
        .map_err(|_| "the client certificate's subject alternative names are malformed".to_owned())?
        .ok_or_else(|| {
            "the client certificate has no URI SAN: it is not an X.509-SVID".to_owned()
        })?;
    let mut uris = san.value.general_names.iter().filter_map(|n| match n {
        GeneralName::URI(u) => Some(*u),
        _ => None,
    });
    let (Some(uri), None) = (uris.next(), uris.next()) else {
        return Err("an X.509-SVID has exactly one URI SAN, its SPIFFE ID".to_owned());
    };
    let shown: String = uri.chars().take(128).collect();
    let valid = uri.len() <= MAX_SPIFFE_ID
        && uri.strip_prefix("spiffe://").is_some_and(|rest| {
            let (td, path) = rest.split_once('/').unwrap_or((rest, ""));
            !td.is_empty()
                && td.chars().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')
                })
                && !path.is_empty()
                && path.split('/').all(|seg| {
                    !seg.is_empty()
                        && seg != "."
                        && seg != ".."
                        && seg
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
                })
        });
    if !valid {
        return Err(format!(
            "the client certificate's URI SAN `{shown}` is not a SPIFFE ID of a workload"
        ));
    }
    Ok(uri.to_owned())
}

/// The trust domain of a SPIFFE ID (`spiffe://<td>/…`).
fn trust_domain(id: &str) -> &str {
    id.strip_prefix("spiffe://")
        .and_then(|r| r.split('/').next())
        .unwrap_or_default()
}

/// Accepts X.509-SVIDs, each against its own trust domain's authorities.
#[derive(Debug)]
struct SvidVerifier {
    domains: HashMap<String, Arc<dyn ClientCertVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for SvidVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        // Agents with keys or JWT workload identities still connect without a certificate.
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let id = spiffe_id(end_entity).map_err(rustls::Error::General)?;
        let td = trust_domain(&id);
        let Some(verifier) = self.domains.get(td) else {
            return Err(rustls::Error::General(format!(
                "trust domain `{td}` has no X.509 authorities configured"
            )));
        };
        verifier.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
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
        rustls::crypto::verify_tls13_signature(
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn cert_with(sans: Vec<rcgen::SanType>) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = sans;
        params.self_signed(&key).unwrap().der().clone()
    }

    fn uri(u: &str) -> rcgen::SanType {
        rcgen::SanType::URI(u.try_into().unwrap())
    }

    #[test]
    fn the_one_uri_san_is_the_spiffe_id() {
        let c = cert_with(vec![
            rcgen::SanType::DnsName("agent.local".try_into().unwrap()),
            uri("spiffe://prod.example/ns/support/sa/agent"),
        ]);
        assert_eq!(
            spiffe_id(&c).unwrap(),
            "spiffe://prod.example/ns/support/sa/agent"
        );
        assert_eq!(
            trust_domain("spiffe://prod.example/ns/support/sa/agent"),
            "prod.example"
        );
    }

    #[test]
    fn certificates_that_are_not_svids_are_refused() {
        let none = cert_with(vec![]);
        assert!(spiffe_id(&none).unwrap_err().contains("no URI SAN"));
        let dns = cert_with(vec![rcgen::SanType::DnsName(
            "agent.local".try_into().unwrap(),
        )]);
        assert!(spiffe_id(&dns).unwrap_err().contains("exactly one URI SAN"));
        let two = cert_with(vec![
            uri("spiffe://a.example/x"),
            uri("spiffe://b.example/y"),
        ]);
        assert!(spiffe_id(&two).unwrap_err().contains("exactly one URI SAN"));
        for bad in [
            "https://prod.example/agent",
            "spiffe://prod.example",
            "spiffe://prod.example/",
            "spiffe://Prod.example/agent",
            "spiffe://prod.example:8443/agent",
            "spiffe://user@prod.example/agent",
            "spiffe://prod.example/a/../b",
            "spiffe://prod.example/a//b",
            "spiffe://prod.example/agent?x=1",
            "spiffe://prod.example/agent#f",
        ] {
            let e = spiffe_id(&cert_with(vec![uri(bad)])).unwrap_err();
            assert!(e.contains("not a SPIFFE ID"), "{bad}: {e}");
        }
        assert_eq!(
            spiffe_id(&CertificateDer::from(vec![0x30, 0x03, 0x01, 0x01])).unwrap_err(),
            "the client certificate could not be parsed"
        );
    }
}
