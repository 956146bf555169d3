//! `toucan crds`: the CustomResourceDefinitions as YAML.

use crate::Outcome;

pub fn print() -> anyhow::Result<Outcome> {
    print!("{}", toucan_core::api::crds_yaml()?);
    Ok(Outcome::Success)
}
