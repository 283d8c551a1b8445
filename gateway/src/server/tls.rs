//! TLS on the listeners (`[server.tls]`): rustls with ring. The certificate and key are read
//! from files and read again when either changes on disk ([`Tls::watch`]): new connections get
//! the new certificate, open ones keep theirs. With `client_ca_file`, every client must present
//! a certificate that CA signed (mutual TLS).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::TlsFiles;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {message}")]
    Read { what: &'static str, path: PathBuf, message: String },
    #[error("{path} holds no {what} (PEM)")]
    Empty { what: &'static str, path: PathBuf },
    #[error("the key in {path} cannot sign: {message}")]
    Key { path: PathBuf, message: String },
    #[error("client CA {path}: {message}")]
    ClientCa { path: PathBuf, message: String },
    #[error("TLS config: {0}")]
    Config(String),
}

/// The TLS side of the listeners: one certificate (reloaded on change), acceptors per protocol.
#[derive(Clone)]
pub struct Tls {
    cert: Arc<ReloadingCert>,
    /// HTTP listeners: ALPN `h2` and `http/1.1`.
    pub http: TlsAcceptor,
    /// The gRPC listener: ALPN `h2`.
    pub grpc: TlsAcceptor,
}

impl Tls {
    /// Reads the files and builds the acceptors; errors name the file.
    pub fn new(files: &TlsFiles) -> Result<Tls, TlsError> {
        let cert = Arc::new(ReloadingCert::load(files)?);
        let verifier = match &files.client_ca_file {
            None => None,
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in read_certs(path, "client CA certificate")? {
                    roots.add(c).map_err(|e| TlsError::ClientCa { path: path.clone(), message: e.to_string() })?;
                }
                let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                    .build()
                    .map_err(|e| TlsError::ClientCa { path: path.clone(), message: e.to_string() })?;
                Some(v)
            }
        };
        let config = |alpn: &[&[u8]]| -> Result<TlsAcceptor, TlsError> {
            let builder = rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            let builder = match &verifier {
                Some(v) => builder.with_client_cert_verifier(v.clone()),
                None => builder.with_no_client_auth(),
            };
            let mut c = builder.with_cert_resolver(cert.clone());
            c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(TlsAcceptor::from(Arc::new(c)))
        };
        Ok(Tls { http: config(&[b"h2", b"http/1.1"])?, grpc: config(&[b"h2"])?, cert })
    }

    /// Reads the certificate and key again whenever either file's content changes (checked every
    /// `interval`) until `token` is cancelled. A pair that does not load is logged and the
    /// certificate in use stays.
    pub async fn watch(self, interval: Duration, token: CancellationToken) {
        loop {
            tokio::select! {
                _ = token.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let cert = self.cert.clone();
            let _ = tokio::task::spawn_blocking(move || cert.reload_if_changed()).await;
        }
    }
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("cert_file", &self.cert.cert_file).finish_non_exhaustive()
    }
}

/// ring, not aws-lc-rs: no C toolchain beyond cc, no cmake. ring has no post-quantum key
/// exchange (hence rustls's deprecation note); the README says so.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate in use, and what its files held when it was read.
#[derive(Debug)]
struct ReloadingCert {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<(Arc<CertifiedKey>, Vec<u8>)>,
}

impl ReloadingCert {
    fn load(files: &TlsFiles) -> Result<ReloadingCert, TlsError> {
        let (key, stamp) = certified_key(&files.cert_file, &files.key_file)?;
        Ok(ReloadingCert {
            cert_file: files.cert_file.clone(),
            key_file: files.key_file.clone(),
            current: RwLock::new((Arc::new(key), stamp)),
        })
    }

    fn reload_if_changed(&self) {
        let stamp =
            [std::fs::read(&self.cert_file).unwrap_or_default(), std::fs::read(&self.key_file).unwrap_or_default()]
                .concat();
        if self.current.read().map(|c| c.1 == stamp).unwrap_or(true) {
            return;
        }
        match certified_key(&self.cert_file, &self.key_file) {
            Ok((key, stamp)) => {
                if let Ok(mut c) = self.current.write() {
                    *c = (Arc::new(key), stamp);
                }
                crate::metrics::tls_reload("ok");
                tracing::info!(cert = %self.cert_file.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                crate::metrics::tls_reload("error");
                tracing::error!(
                    "TLS certificate changed on disk but does not load; still serving the previous one: {e}"
                );
                // do not retry the same broken content every interval
                if let Ok(mut c) = self.current.write() {
                    c.1 = stamp;
                }
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.0.clone())
    }
}

/// The certificate chain and key of the files, and their bytes (to notice changes).
fn certified_key(cert_file: &Path, key_file: &Path) -> Result<(CertifiedKey, Vec<u8>), TlsError> {
    let chain = read_certs(cert_file, "certificate")?;
    let key_pem = std::fs::read(key_file).map_err(|e| TlsError::Read {
        what: "private key",
        path: key_file.into(),
        message: e.to_string(),
    })?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|_| TlsError::Empty { what: "private key", path: key_file.into() })?;
    let signer = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| TlsError::Key { path: key_file.into(), message: e.to_string() })?;
    let stamp = [std::fs::read(cert_file).unwrap_or_default(), key_pem].concat();
    Ok((CertifiedKey::new(chain, signer), stamp))
}

fn read_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| TlsError::Read { what, path: path.into(), message: e.to_string() })?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Read { what, path: path.into(), message: format!("not PEM: {e:?}") })?;
    if certs.is_empty() {
        return Err(TlsError::Empty { what, path: path.into() });
    }
    Ok(certs)
}
