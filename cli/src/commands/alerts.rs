//! `toucan get alerts [ENDPOINT]`: the alerts of the endpoints served from this machine, newest
//! first — what breached, since when, and what the endpoint did about it (the retraining run
//! it started, why it held, how the retrained model's rollout ended).

use toucan_core::monitoring::alerts::AlertPhase;
use toucan_core::records::AlertRecord;

use crate::Outcome;
use crate::home::Home;
use crate::output::{self, Format};

/// The most alerts listed unless `--limit` says.
pub const DEFAULT_LIMIT: u32 = 50;

/// Lists the local alerts: open and resolved ones, and with `all` the pending breaches that
/// cleared before they fired.
pub async fn get_alerts(
    endpoint: Option<&str>,
    all: bool,
    limit: u32,
    format: Format,
) -> anyhow::Result<Outcome> {
    let home = Home::locate();
    let store = home.open_store().await?;
    let alerts: Vec<AlertRecord> = store
        .list_alerts(endpoint, false, limit.max(1))
        .await?
        .into_iter()
        .filter(|a| all || a.phase != AlertPhase::Cleared)
        .collect();
    match format {
        Format::Table => print!("{}", alerts_table(&alerts, endpoint.is_none())),
        format => output::print_structured(format, &alerts)?,
    }
    Ok(Outcome::Success)
}

/// The alerts as a table; with `endpoints`, a column naming each one's endpoint.
pub fn alerts_table(alerts: &[AlertRecord], endpoints: bool) -> String {
    if alerts.is_empty() {
        return "No alerts.\n".to_string();
    }
    let mut header = vec!["ENDPOINT", "ALERT", "STATE", "SINCE", "SUMMARY", "ACTION"];
    if !endpoints {
        header.remove(0);
    }
    let rows = alerts
        .iter()
        .map(|a| {
            let mut row = vec![
                a.endpoint.clone(),
                a.key.clone(),
                a.phase.as_str().to_string(),
                output::timestamp(a.firing_since.unwrap_or(a.active_since)),
                a.summary.clone(),
                a.action.clone().unwrap_or_else(|| "-".to_string()),
            ];
            if !endpoints {
                row.remove(0);
            }
            row
        })
        .collect();
    output::table(&header, rows)
}
