//! A test certificate authority (rcgen) and an mTLS client: the caller of
//! an mTLS daemon is its client certificate (CN id, O project, OU roles).

use std::path::Path;
use std::time::Duration;

use rack_agent::proto::rack_agent_client::RackAgentClient;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
    SanType,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

use super::Daemon;

pub struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(vec![]).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        Pki {
            ca: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A leaf certificate: (cert PEM, key PEM).
    pub fn issue(
        &self,
        cn: &str,
        org: Option<&str>,
        roles: Option<&str>,
        server: bool,
    ) -> (String, String) {
        let sans = if server {
            vec!["localhost".to_string()]
        } else {
            vec![]
        };
        let mut params = CertificateParams::new(sans).unwrap();
        if server {
            params
                .subject_alt_names
                .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        }
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        if let Some(o) = org {
            params.distinguished_name.push(DnType::OrganizationName, o);
        }
        if let Some(r) = roles {
            params
                .distinguished_name
                .push(DnType::OrganizationalUnitName, r);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

pub fn write(dir: &Path, name: &str, text: &str) {
    std::fs::create_dir_all(dir.join("credentials")).unwrap();
    std::fs::write(dir.join("credentials").join(name), text).unwrap();
}

pub async fn client(
    d: &Daemon,
    ca_pem: &str,
    identity: Option<&(String, String)>,
) -> Result<RackAgentClient<Channel>, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    let ch = Channel::from_shared(format!("https://{}", d.addr))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await?;
    Ok(RackAgentClient::new(ch))
}

/// Starts the daemon with mTLS: a server certificate for localhost from
/// `pki`, which also signs the client certificates it trusts. `body` is the
/// rest of the config (no `[api]`).
pub fn start_tls_daemon(dir: &Path, pki: &Pki, body: &str) -> Daemon {
    let (cert, key) = pki.issue("rack-agent", None, None, true);
    write(dir, "server.pem", &cert);
    write(dir, "server.key", &key);
    write(dir, "clients-ca.pem", &pki.ca_pem());
    super::start_daemon(
        dir,
        &format!("[api.tls]\ncert_file = \"server.pem\"\nkey_file = \"server.key\"\nclient_ca_file = \"clients-ca.pem\"\n\n{body}"),
    )
}
