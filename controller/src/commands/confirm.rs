//! The confirmation a person at the terminal gives before a run changes
//! anything; a pipeline passes `--yes`.

use crate::exit::{Refused, UsageError};
use anyhow::Result;
use std::io::{BufRead, IsTerminal, Write};

/// Asks the person at the terminal; a usage error when nobody can answer.
pub fn confirm(question: &str) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        return Err(UsageError(
            "stdin is not a terminal: pass --yes to confirm the upgrade".into(),
        )
        .into());
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if matches!(line.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(Refused("not confirmed".into()).into())
    }
}
