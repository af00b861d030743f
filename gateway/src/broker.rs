//! How the back office's commands (`probegate tail`, `probegate plugin push|list|remove`)
//! reach a broker: one set of flags, one way to build the client options.

use rumqttc::MqttOptions;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Debug, Clone)]
pub struct BrokerArgs {
    #[arg(long, default_value = "localhost")]
    pub host: String,
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    #[arg(long)]
    pub username: Option<String>,
    #[arg(long)]
    pub password: Option<String>,
    /// PEM CA file: connect with TLS.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
}

impl BrokerArgs {
    /// Client options for a one-off client named after its `role` and this process.
    pub fn options(&self, role: &str) -> Result<MqttOptions, String> {
        let mut mqtt = MqttOptions::new(
            format!("probegate-{role}-{}", std::process::id()),
            &self.host,
            self.port,
        );
        // Bundles and full consent lists pass through the tree too (up to 8 MiB).
        mqtt.set_max_packet_size(8 << 20, 8 << 20);
        mqtt.set_keep_alive(Duration::from_secs(30));
        if let Some(user) = &self.username {
            mqtt.set_credentials(user, self.password.clone().unwrap_or_default());
        }
        if let Some(ca) = &self.ca_file {
            let ca = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
            let _ = rustls::crypto::ring::default_provider().install_default();
            mqtt.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Simple {
                    ca,
                    alpn: None,
                    client_auth: None,
                },
            ));
        }
        Ok(mqtt)
    }

    /// `host:port`, for error messages.
    pub fn name(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}
