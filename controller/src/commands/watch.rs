//! `hubshift watch`: see [`crate::watch`].

use crate::output::Output;
use crate::watch::WatchArgs;
use anyhow::Result;
use std::path::Path;

/// Watches the inventory's groups until SIGINT or SIGTERM.
pub async fn watch(out: Output, inventory: &Path, args: &WatchArgs) -> Result<()> {
    crate::watch::watch(out, inventory, args).await
}
