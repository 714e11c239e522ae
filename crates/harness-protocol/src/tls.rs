//! Mutual TLS: the certificates of a state directory and the rustls
//! configurations of both sides.
//!
//! On first start the daemon makes a private CA, a server certificate for
//! `localhost` and `127.0.0.1`, and one client certificate, all signed by
//! that CA ([`ensure_certificates`]). The daemon accepts only clients that
//! present a certificate of its CA; clients accept only a server certificate
//! of that CA. Only the `ring` provider is used.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::state_dir::{StateDir, StateDirError, write_atomic};

/// The name the server certificate is made for and clients verify.
pub const SERVER_NAME: &str = "localhost";

/// An error making or loading certificates or TLS configurations.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file of the state directory.
    #[error(transparent)]
    StateDir(#[from] StateDirError),
    /// Making a certificate failed.
    #[error("generating {what}: {source}")]
    Generate {
        /// Which certificate.
        what: &'static str,
        /// The cause.
        #[source]
        source: rcgen::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// The certificate files of a state directory.
#[derive(Debug, Clone)]
pub struct CertPaths {
    /// The CA certificate (PEM).
    pub ca_cert: PathBuf,
    /// The CA private key (PEM, 0600).
    pub ca_key: PathBuf,
    /// The server certificate chain (PEM).
    pub server_cert: PathBuf,
    /// The server private key (PEM, 0600).
    pub server_key: PathBuf,
    /// The client certificate chain (PEM).
    pub client_cert: PathBuf,
    /// The client private key (PEM, 0600).
    pub client_key: PathBuf,
}

impl CertPaths {
    /// The certificate files under `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        CertPaths {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        }
    }

    /// The certificate files of a state directory.
    pub fn of(state: &StateDir) -> Self {
        CertPaths::in_dir(&state.tls_dir())
    }

    fn all(&self) -> [&Path; 6] {
        [
            &self.ca_cert,
            &self.ca_key,
            &self.server_cert,
            &self.server_key,
            &self.client_cert,
            &self.client_key,
        ]
    }
}

/// A freshly made set of certificates, as PEM text.
#[derive(Debug, Clone)]
pub struct GeneratedCerts {
    /// The CA certificate.
    pub ca_cert: String,
    /// The CA key.
    pub ca_key: String,
    /// The server certificate.
    pub server_cert: String,
    /// The server key.
    pub server_key: String,
    /// The client certificate.
    pub client_cert: String,
    /// The client key.
    pub client_key: String,
}

fn gen_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> TlsError {
    move |source| TlsError::Generate { what, source }
}

/// Makes a CA named `ca_name` and a server and a client certificate signed by it.
pub fn generate_certificates(ca_name: &str) -> Result<GeneratedCerts, TlsError> {
    let ca_key = KeyPair::generate().map_err(gen_err("the CA key"))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err("the CA"))?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(gen_err("the CA"))?;
    let issuer = Issuer::from_params(&ca_params, &ca_key);

    let server_key = KeyPair::generate().map_err(gen_err("the server key"))?;
    let mut sp = CertificateParams::new(vec![SERVER_NAME.to_owned()])
        .map_err(gen_err("the server certificate"))?;
    sp.subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    sp.distinguished_name.push(DnType::CommonName, "harnessd");
    sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = sp
        .signed_by(&server_key, &issuer)
        .map_err(gen_err("the server certificate"))?;

    let client_key = KeyPair::generate().map_err(gen_err("the client key"))?;
    let mut cp =
        CertificateParams::new(Vec::<String>::new()).map_err(gen_err("the client certificate"))?;
    cp.distinguished_name
        .push(DnType::CommonName, "harness client");
    cp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = cp
        .signed_by(&client_key, &issuer)
        .map_err(gen_err("the client certificate"))?;

    Ok(GeneratedCerts {
        ca_cert: ca_cert.pem(),
        ca_key: ca_key.serialize_pem(),
        server_cert: server_cert.pem(),
        server_key: server_key.serialize_pem(),
        client_cert: client_cert.pem(),
        client_key: client_key.serialize_pem(),
    })
}

/// Writes certificates to `paths`: certificates 0644, keys 0600, each atomically.
pub fn write_certificates(paths: &CertPaths, certs: &GeneratedCerts) -> Result<(), TlsError> {
    // The CA certificate goes last: its presence marks a complete set.
    for (path, text, mode) in [
        (&paths.ca_key, &certs.ca_key, 0o600),
        (&paths.server_key, &certs.server_key, 0o600),
        (&paths.server_cert, &certs.server_cert, 0o644),
        (&paths.client_key, &certs.client_key, 0o600),
        (&paths.client_cert, &certs.client_cert, 0o644),
        (&paths.ca_cert, &certs.ca_cert, 0o644),
    ] {
        write_atomic(path, text.as_bytes(), mode)?;
    }
    Ok(())
}

/// Makes the state directory's certificates unless a complete set exists.
/// Returns true if it made them.
pub fn ensure_certificates(state: &StateDir) -> Result<bool, TlsError> {
    state.create()?;
    let paths = CertPaths::of(state);
    if paths.all().iter().all(|p| p.exists()) {
        return Ok(false);
    }
    let certs = generate_certificates("harness local CA")?;
    write_certificates(&paths, &certs)?;
    Ok(true)
}

/// The ring crypto provider, the only one harness uses.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = fs::read(path).map_err(|e| StateDirError::io(path, e))?;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
    let certs = certs.map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            message: "no certificate in file".into(),
        });
    }
    Ok(certs)
}

/// Reads the private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = fs::read(path).map_err(|e| StateDirError::io(path, e))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Pem {
        path: path.to_owned(),
        message: match e {
            pem::Error::NoItemsFound => "no private key in file".into(),
            e => e.to_string(),
        },
    })
}

fn roots(ca_cert: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in load_certs(ca_cert)? {
        roots
            .add(c)
            .map_err(|e| TlsError::Config(format!("{}: {e}", ca_cert.display())))?;
    }
    Ok(roots)
}

/// The daemon's TLS configuration: its server certificate, and client
/// certificates required and verified against its CA.
pub fn server_config(paths: &CertPaths) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots(&paths.ca_cert)?),
        provider.clone(),
    )
    .build()
    .map_err(|e| TlsError::Config(e.to_string()))?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            load_certs(&paths.server_cert)?,
            load_key(&paths.server_key)?,
        )
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Arc::new(config))
}

/// A client's TLS configuration: trusts only the CA, presents the client certificate.
pub fn client_config(paths: &CertPaths) -> Result<Arc<ClientConfig>, TlsError> {
    client_config_from(&paths.ca_cert, &paths.client_cert, &paths.client_key)
}

/// A client's TLS configuration from explicit files.
pub fn client_config_from(
    ca_cert: &Path,
    client_cert: &Path,
    client_key: &Path,
) -> Result<Arc<ClientConfig>, TlsError> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots(ca_cert)?)
        .with_client_auth_cert(load_certs(client_cert)?, load_key(client_key)?)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Arc::new(config))
}

/// The server name clients verify.
pub fn server_name() -> ServerName<'static> {
    ServerName::try_from(SERVER_NAME).expect("\"localhost\" is a valid DNS name")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn certificates_are_made_once_with_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path().join("s"));
        assert!(ensure_certificates(&state).unwrap());
        assert!(!ensure_certificates(&state).unwrap());
        let paths = CertPaths::of(&state);
        for key in [&paths.ca_key, &paths.server_key, &paths.client_key] {
            let mode = fs::metadata(key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
        server_config(&paths).unwrap();
        client_config(&paths).unwrap();
    }

    #[test]
    fn pem_files_are_read_and_bad_ones_named() {
        let dir = tempfile::tempdir().unwrap();
        let paths = CertPaths::in_dir(dir.path());
        let certs = generate_certificates("test CA").unwrap();
        write_certificates(&paths, &certs).unwrap();
        // A chain file holding two certificates yields both, in order.
        let chain = dir.path().join("chain.pem");
        fs::write(&chain, format!("{}{}", certs.server_cert, certs.ca_cert)).unwrap();
        let read = load_certs(&chain).unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(read[1], load_certs(&paths.ca_cert).unwrap()[0]);
        assert!(matches!(
            load_key(&paths.server_key).unwrap(),
            PrivateKeyDer::Pkcs8(_)
        ));

        let no_key = load_key(&paths.ca_cert).unwrap_err().to_string();
        assert!(no_key.contains("no private key in file"), "{no_key}");
        assert!(no_key.contains("ca.pem"), "{no_key}");
        let no_cert = load_certs(&paths.ca_key).unwrap_err().to_string();
        assert!(no_cert.contains("no certificate in file"), "{no_cert}");
        let broken = dir.path().join("broken.pem");
        fs::write(&broken, "-----BEGIN CERTIFICATE-----\nnot base64 !!!\n").unwrap();
        let err = load_certs(&broken).unwrap_err().to_string();
        assert!(err.contains("broken.pem"), "{err}");
    }
}
