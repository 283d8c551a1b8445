//! The client side of TLS that the gateway (webhooks, the `sluice` CLI) and the load tester
//! share: whom to trust (the system's CAs, plus a CA file when given) and an HTTPS-or-HTTP
//! connector for hyper. rustls with ring, like the gateway's listeners.

use std::path::Path;
use std::sync::Arc;

use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Why a TLS client could not be set up.
#[derive(Debug)]
pub struct ClientTlsError(pub String);

impl std::fmt::Display for ClientTlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClientTlsError {}

/// ring: no post-quantum key exchange (see the README).
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM file (a CA to trust).
pub fn read_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientTlsError> {
    let pem =
        std::fs::read(path).map_err(|e| ClientTlsError(format!("cannot read CA file {}: {e}", path.display())))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| ClientTlsError(format!("CA file {} is not PEM: {e:?}", path.display())))?;
    if certs.is_empty() {
        return Err(ClientTlsError(format!("CA file {} holds no certificate", path.display())));
    }
    Ok(certs)
}

/// A client config trusting the system's CAs (those that load) and the certificates of
/// `ca_file`, with ALPN `alpn`.
pub fn client_config(ca_file: Option<&Path>, alpn: &[&[u8]]) -> Result<rustls::ClientConfig, ClientTlsError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for c in native.certs {
        let _ = roots.add(c);
    }
    if let Some(path) = ca_file {
        for c in read_ca(path)? {
            roots.add(c).map_err(|e| ClientTlsError(format!("CA file {}: {e}", path.display())))?;
        }
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientTlsError(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A hyper connector for `https://` (TLS, `ca_file` trusted besides the system's CAs) and
/// `http://` URLs, HTTP/1.1.
pub fn https_connector(ca_file: Option<&Path>) -> Result<HttpsConnector<HttpConnector>, ClientTlsError> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(std::time::Duration::from_secs(10)));
    Ok(HttpsConnectorBuilder::new()
        .with_tls_config(client_config(ca_file, &[])?)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}
