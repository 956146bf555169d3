//! A PostgreSQL database of a test's own, on the server `make test` starts
//! (`tests/postgres/up DIR` writes its superuser URL to `DIR/url`).
//!
//! [`admin_url`] is that URL from [`URL_ENV`], or `None` after saying which test skips; with
//! [`REQUIRE_ENV`]`=1` a missing URL is an error instead. [`Database::create`] makes a fresh
//! database named after the test and this process, so tests run in parallel and repeatedly.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};

use crate::skip::{self, Availability};

/// The server's superuser URL (`postgres://USER:PASSWORD@HOST:PORT/DB`).
pub const URL_ENV: &str = "TOUCAN_TEST_POSTGRES_URL";
/// Set to `1` (as `make test` does), a test that needs PostgreSQL fails without [`URL_ENV`]
/// instead of skipping.
pub const REQUIRE_ENV: &str = "TOUCAN_REQUIRE_POSTGRES";

/// The server's superuser URL; `None`, after saying which test skips and why, when [`URL_ENV`]
/// is unset or empty and [`REQUIRE_ENV`] is not `1`; an error when it is.
pub fn admin_url() -> Result<Option<String>> {
    let url = skip::setting(URL_ENV);
    match skip::availability(url.is_some(), skip::required(REQUIRE_ENV).as_deref()) {
        Availability::Use => Ok(url),
        Availability::Skip => {
            skip::say(&skip_message(&skip::this_test()));
            Ok(None)
        }
        Availability::Fail => bail!(
            "{REQUIRE_ENV}=1 but {URL_ENV} is unset; start a server with `tests/postgres/up DIR` \
             and set it to the contents of DIR/url"
        ),
    }
}

fn skip_message(test: &str) -> String {
    format!(
        "skipping {test} on PostgreSQL: {URL_ENV} is unset (`tests/postgres/up DIR` starts a \
         server and writes its URL to DIR/url; `make test` sets it). {REQUIRE_ENV}=1 makes this \
         skip a failure."
    )
}

/// `url` with its database replaced by `name` (user, password, host and query kept).
pub fn database_url(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    format!("{}/{name}{query}", &base[..host_end])
}

/// A database created for one test; [`Database::drop_database`] removes it.
#[derive(Debug, Clone)]
pub struct Database {
    admin: String,
    /// The database's name, `toucan_TEST_PID_N`.
    pub name: String,
    /// Its URL, with the superuser of the admin URL.
    pub url: String,
}

impl Database {
    /// Creates `toucan_TEST_PID_N` (`TEST` cut to 32 characters, lower-cased) on the server at
    /// `admin`, replacing one left by an earlier process of the same id.
    pub fn create(admin: &str, test: &str) -> Result<Database> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let mut short: String = test.chars().take(32).collect();
        short.make_ascii_lowercase();
        let name = format!(
            "toucan_{short}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let db = Database {
            url: database_url(admin, &name),
            admin: admin.to_owned(),
            name,
        };
        psql(
            admin,
            &format!(r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#, db.name),
        )?;
        psql(admin, &format!(r#"CREATE DATABASE "{}""#, db.name))?;
        Ok(db)
    }

    /// Drops the database, closing the connections still open to it.
    pub fn drop_database(&self) -> Result<()> {
        psql(
            &self.admin,
            &format!(r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#, self.name),
        )
    }
}

/// Runs one SQL command with `psql`, stopping at its first error.
pub fn psql(url: &str, sql: &str) -> Result<()> {
    let out = Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qc", sql])
        .output()
        .context("running psql")?;
    if !out.status.success() {
        bail!("psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_replaces_only_the_database() {
        assert_eq!(
            database_url("postgres://u:p@h:5432/postgres?sslmode=disable", "toucan_x"),
            "postgres://u:p@h:5432/toucan_x?sslmode=disable"
        );
        assert_eq!(database_url("postgres://h", "d"), "postgres://h/d");
    }

    #[test]
    fn the_skip_names_the_test_and_how_to_run_it() {
        let message = skip_message("test postgres::runs");
        assert!(
            message.contains("skipping test postgres::runs"),
            "{message}"
        );
        assert!(message.contains("tests/postgres/up"), "{message}");
        assert!(message.contains(REQUIRE_ENV), "{message}");
    }
}
