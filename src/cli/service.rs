//! The relay's options for running as a service: the user it drops to and the log's format.

use clap::ValueEnum;
use mailflow::relay::privileges::RunAs;

/// How the relay's log lines are written on stderr.
#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub(super) enum LogFormat {
    /// One line of text per event, for people and journald.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, fields), for log shippers.
    Json,
}

/// `--user` and `--log-format`.
#[derive(Debug, clap::Args)]
pub(super) struct ServiceArgs {
    /// Run as this user (and group) once every listener and the admin port are bound: the
    /// relay is started as root (or with CAP_NET_BIND_SERVICE) to bind port 25. The spool
    /// must belong to this user.
    #[arg(long, value_name = "USER[:GROUP]")]
    user: Option<String>,
    /// The log's format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

impl ServiceArgs {
    /// The user named by `--user`, looked up now: an unknown user or one this process may
    /// not become is an error before anything is bound.
    pub(super) fn run_as(&self) -> Result<Option<RunAs>, String> {
        self.user
            .as_deref()
            .map(RunAs::resolve)
            .transpose()
            .map_err(|e| e.to_string())
    }

    /// Installs the log on stderr, filtered by RUST_LOG or else `filter`.
    pub(super) fn init_log(&self, filter: &str) {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        let _ = match self.log_format {
            LogFormat::Text => {
                // Colour only for a person at a terminal: a log file, journald or a log
                // shipper gets plain text (NO_COLOR, https://no-color.org, turns it off at a
                // terminal too).
                let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
                    && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
                builder.with_ansi(ansi).try_init()
            }
            // The events' own fields (client, connector, segment, ...) stay separate keys
            // under `fields`, so a shipper can index them without parsing the message.
            LogFormat::Json => builder.json().try_init(),
        };
    }
}

/// Tells systemd what the relay is doing (`Type=notify`): `READY=1` once it listens,
/// `STOPPING=1` when it drains. Nothing when it was not started with `NOTIFY_SOCKET`; a
/// failure to tell is not the relay's failure.
pub(super) fn notify(state: &str) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(socket) = UnixDatagram::unbound() else {
        return;
    };
    // `@name` is a socket in the abstract namespace, anything else a path.
    let address = match target.as_bytes().strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name),
        None => SocketAddr::from_pathname(&target),
    };
    if let Err(e) = address.and_then(|a| socket.send_to_addr(state.as_bytes(), &a)) {
        tracing::warn!("telling systemd `{state}`: {e}");
    }
}
