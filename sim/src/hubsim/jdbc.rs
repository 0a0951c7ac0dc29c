//! The JDBC URI the hub is given: `jdbc:postgresql://host[:port]/db?user=U&password=P`,
//! or `env:NAME` naming the environment variable that holds it (the agent
//! passes it as `HUBSHIFT_JDBC_URI` so it never sits on a command line).

use hubshift_common::redact::{Secret, redact};
use std::time::Duration;
use thiserror::Error;

/// A JDBC URI that could not be used. Messages never hold the password.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum JdbcError {
    /// `env:NAME` named an unset variable.
    #[error("environment variable {0} (named by -j env:{0}) is not set")]
    MissingEnv(String),
    /// The URI is malformed.
    #[error("invalid JDBC URI {uri}: {reason}")]
    Invalid {
        /// The URI, redacted.
        uri: String,
        /// Why.
        reason: &'static str,
    },
}

/// Where the HA database is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JdbcTarget {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Database name.
    pub dbname: String,
    /// User.
    pub user: String,
    /// Password (never printed).
    pub password: Secret,
}

impl JdbcTarget {
    /// Resolves `env:NAME` and parses the URI.
    pub fn resolve(arg: &str) -> Result<Self, JdbcError> {
        match arg.strip_prefix("env:") {
            Some(name) => {
                let uri = std::env::var(name).map_err(|_| JdbcError::MissingEnv(name.into()))?;
                Self::parse(&uri)
            }
            None => Self::parse(arg),
        }
    }

    /// Resolves the `-j` argument for a hubsim command: logs a bad one and
    /// yields the usage exit code; registers the password so that no log
    /// line ever shows it.
    pub fn resolve_for_logging(arg: &str) -> Result<Self, i32> {
        match Self::resolve(arg) {
            Ok(target) => {
                super::log::add_secret(target.password.expose());
                Ok(target)
            }
            Err(e) => {
                super::log::error(&e.to_string());
                Err(super::EXIT_USAGE)
            }
        }
    }

    /// Parses `jdbc:postgresql://host[:port]/db[?k=v&...]`.
    pub fn parse(uri: &str) -> Result<Self, JdbcError> {
        let bad = |reason| JdbcError::Invalid {
            uri: redact(uri),
            reason,
        };
        let rest = uri
            .strip_prefix("jdbc:postgresql://")
            .ok_or_else(|| bad("must start with jdbc:postgresql://"))?;
        let (authority, path_query) =
            rest.split_at(rest.find('/').ok_or_else(|| bad("no /database"))?);
        let (path, query) = match path_query[1..].split_once('?') {
            Some((p, q)) => (p, q),
            None => (&path_query[1..], ""),
        };
        if authority.contains('@') {
            return Err(bad(
                "put user and password in the query (?user=U&password=P)",
            ));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h.to_string(),
                p.parse::<u16>().map_err(|_| bad("invalid port"))?,
            ),
            _ => (authority.to_string(), 5432),
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let dbname = percent_decode(path).ok_or_else(|| bad("invalid %-escape in database"))?;
        if dbname.is_empty() {
            return Err(bad("no database name"));
        }
        let (mut user, mut password) = (None, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v).ok_or_else(|| bad("invalid %-escape in query"))?;
            match k {
                "user" => user = Some(v),
                "password" => password = Some(v),
                _ => {}
            }
        }
        Ok(Self {
            host,
            port,
            dbname,
            user: user.ok_or_else(|| bad("no user= parameter"))?,
            password: Secret::new(password.unwrap_or_default()),
        })
    }

    /// The URI without its password, for messages.
    pub fn display(&self) -> String {
        format!(
            "jdbc:postgresql://{}:{}/{}?user={}&password=***",
            self.host, self.port, self.dbname, self.user
        )
    }

    /// Connection settings for tokio-postgres.
    pub fn pg_config(&self, connect_timeout: Duration) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.host)
            .port(self.port)
            .dbname(&self.dbname)
            .user(&self.user)
            .password(self.password.expose())
            .application_name("hubsim")
            .connect_timeout(connect_timeout);
        c
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_uri() {
        let t = JdbcTarget::parse(
            "jdbc:postgresql://127.0.0.1:5433/hub?user=hb&password=p%40ss&ssl=false",
        )
        .unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.dbname.as_str(), t.user.as_str()),
            ("127.0.0.1", 5433, "hub", "hb")
        );
        assert_eq!(t.password.expose(), "p@ss");
        assert!(!t.display().contains("p@ss"));
        let t = JdbcTarget::parse("jdbc:postgresql://db.local/hub?user=u").unwrap();
        assert_eq!(t.port, 5432);
    }

    #[test]
    fn errors_never_show_the_password() {
        for bad in [
            "postgres://u:topsecretpw@h/db",
            "jdbc:postgresql://h:99999/db?user=u&password=topsecretpw",
            "jdbc:postgresql://h/db?password=topsecretpw",
        ] {
            let e = JdbcTarget::parse(bad).unwrap_err().to_string();
            assert!(!e.contains("topsecretpw"), "{e}");
        }
    }

    #[test]
    fn reads_env() {
        // SAFETY: the variable name is unique to this test.
        unsafe {
            std::env::set_var(
                "HUBSIM_JDBC_TEST_VAR",
                "jdbc:postgresql://h:1/d?user=u&password=x",
            )
        };
        assert_eq!(
            JdbcTarget::resolve("env:HUBSIM_JDBC_TEST_VAR")
                .unwrap()
                .port,
            1
        );
        assert!(matches!(
            JdbcTarget::resolve("env:HUBSIM_NO_SUCH_VAR"),
            Err(JdbcError::MissingEnv(_))
        ));
    }
}
