//! `EGRESS_ROUTER_MODE`: what the router is to do. The proxy modes' values name the init
//! container of a proxy pod (network only); the proxies themselves are the `http-proxy` and
//! `dns-proxy` commands of the main container.

use std::str::FromStr;

use crate::config::error::ConfigError;

/// `EGRESS_ROUTER_MODE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Set up the redirect data plane and exit; it keeps working without the process.
    Init,
    /// Set up the redirect data plane, then stay in the foreground as the agent (default).
    Legacy,
    /// Print the translation plan and exit; needs no privileges and touches nothing.
    UnitTest,
    /// `http-proxy`: the init container of an HTTP proxy pod, network set-up only; the
    /// proxy runs in the main container (the `http-proxy` command).
    HttpProxyInit,
    /// `dns-proxy`: the init container of a DNS proxy pod, network set-up only; the proxy
    /// runs in the main container (the `dns-proxy` command).
    DnsProxyInit,
}

impl Mode {
    /// The mode's name as written in `EGRESS_ROUTER_MODE`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Init => "init",
            Self::Legacy => "legacy",
            Self::UnitTest => "unit-test",
            Self::HttpProxyInit => "http-proxy",
            Self::DnsProxyInit => "dns-proxy",
        }
    }

    /// Whether the mode translates `EGRESS_DESTINATION` in the data plane.
    #[must_use]
    pub const fn is_redirect(self) -> bool {
        matches!(self, Self::Init | Self::Legacy | Self::UnitTest)
    }
}

impl FromStr for Mode {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            // Unset or empty selects the default, as in OpenShift's image.
            "" | "legacy" => Ok(Self::Legacy),
            "init" => Ok(Self::Init),
            "unit-test" => Ok(Self::UnitTest),
            "http-proxy" => Ok(Self::HttpProxyInit),
            "dns-proxy" => Ok(Self::DnsProxyInit),
            other => Err(ConfigError::Mode(other.to_owned())),
        }
    }
}
