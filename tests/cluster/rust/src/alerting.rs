//! The Prometheus and Alertmanager `make test` starts (`tests/alerting/up DIR` writes their
//! variables to `DIR/env`): a test wires its own scrape target, rule file and webhook into
//! them for as long as it holds a [`Wired`].
//!
//! Prometheus picks target files up within a second and reloads rules on `POST /-/reload`;
//! Alertmanager posts every alert to the URL in its `toucan_webhook_url` label, with the
//! bearer token of the token file, which a test may replace for its time (and which is put
//! back after).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::skip::{self, Availability};

/// Prometheus's base URL.
pub const PROMETHEUS_URL_ENV: &str = "TOUCAN_TEST_PROMETHEUS_URL";
/// The folder of Prometheus's file_sd target files.
pub const TARGETS_DIR_ENV: &str = "TOUCAN_TEST_PROMETHEUS_TARGETS_DIR";
/// The folder of Prometheus's rule files.
pub const RULES_DIR_ENV: &str = "TOUCAN_TEST_PROMETHEUS_RULES_DIR";
/// The file holding the bearer token Alertmanager's webhook sends.
pub const TOKEN_FILE_ENV: &str = "TOUCAN_TEST_ALERTMANAGER_WEBHOOK_TOKEN_FILE";
/// Set to `1` (as `make test` does), a test that needs the alerting services fails without
/// them instead of skipping.
pub const REQUIRE_ENV: &str = "TOUCAN_REQUIRE_ALERTING";
/// The label of an alert that names the URL Alertmanager posts it to.
pub const WEBHOOK_LABEL: &str = "toucan_webhook_url";

/// What a test wired in; taken out again when dropped.
#[derive(Debug)]
pub struct Wired {
    prometheus: String,
    files: Vec<PathBuf>,
    /// The token file and what it held before.
    token: Option<(PathBuf, String)>,
}

impl Wired {
    /// Prometheus scrapes `target` (`HOST:PORT`, path `/metrics`) and evaluates `rules` (a
    /// rule file's YAML `groups:`), each alert sent to `webhook` with `token` as the
    /// webhook's bearer token when one is given. `name` names the files (unique per test).
    /// `None`, after saying which test skips, without the services (an error when
    /// [`REQUIRE_ENV`] is `1`).
    pub fn wire(
        name: &str,
        target: &str,
        rules: &str,
        webhook: &str,
        token: Option<&str>,
    ) -> Result<Option<Wired>> {
        let settings = (
            skip::setting(PROMETHEUS_URL_ENV),
            skip::setting(TARGETS_DIR_ENV),
            skip::setting(RULES_DIR_ENV),
            skip::setting(TOKEN_FILE_ENV),
        );
        let (Some(prometheus), Some(targets), Some(rule_dir), Some(token_file)) = settings else {
            return match skip::availability(false, skip::required(REQUIRE_ENV).as_deref()) {
                Availability::Fail => bail!(
                    "{REQUIRE_ENV}=1 but {PROMETHEUS_URL_ENV} is unset; start them with \
                     `tests/alerting/up DIR` and export the variables of DIR/env"
                ),
                _ => {
                    skip::say(&format!(
                        "{}: no Prometheus and Alertmanager ({PROMETHEUS_URL_ENV} is unset; \
                         `tests/alerting/up DIR` starts them): the alerting path is not checked",
                        skip::this_test()
                    ));
                    Ok(None)
                }
            };
        };
        let mut wired = Wired {
            prometheus,
            files: Vec::new(),
            token: None,
        };
        let target_file = Path::new(&targets).join(format!("{name}.json"));
        let group = serde_json::json!([{"targets": [target], "labels": {"test": name}}]);
        std::fs::write(&target_file, group.to_string())
            .with_context(|| format!("writing {}", target_file.display()))?;
        wired.files.push(target_file);
        let rule_file = Path::new(&rule_dir).join(format!("{name}.yaml"));
        std::fs::write(&rule_file, with_webhook(rules, webhook)?)
            .with_context(|| format!("writing {}", rule_file.display()))?;
        wired.files.push(rule_file);
        if let Some(token) = token {
            let path = PathBuf::from(token_file);
            let before = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            std::fs::write(&path, token).with_context(|| format!("writing {}", path.display()))?;
            wired.token = Some((path, before));
        }
        wired.reload()?;
        Ok(Some(wired))
    }

    fn reload(&self) -> Result<()> {
        let port: u16 = self
            .prometheus
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .with_context(|| format!("no port in {}", self.prometheus))?;
        let (status, body) = crate::net::http("POST", port, "/-/reload", None, None);
        if status != 200 {
            bail!("POST {}/-/reload: {status} {body}", self.prometheus);
        }
        Ok(())
    }
}

impl Drop for Wired {
    fn drop(&mut self) {
        for file in &self.files {
            let _ = std::fs::remove_file(file);
        }
        if let Some((path, before)) = &self.token {
            let _ = std::fs::write(path, before);
        }
        let _ = self.reload();
    }
}

/// The rule file with every rule's labels naming `webhook` in [`WEBHOOK_LABEL`]. Rule files
/// are YAML; JSON is YAML, so the result is written as JSON.
fn with_webhook(rules: &str, webhook: &str) -> Result<String> {
    let mut doc: serde_json::Value =
        serde_yaml_ng::from_str(rules).context("reading the rule file")?;
    let groups = doc["groups"]
        .as_array_mut()
        .context("the rule file has no groups")?;
    for group in groups {
        for rule in group["rules"].as_array_mut().into_iter().flatten() {
            rule["labels"][WEBHOOK_LABEL] = webhook.into();
        }
    }
    Ok(doc.to_string())
}
