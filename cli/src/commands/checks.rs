//! Checks of numeric flags that the core does not check itself (encoding batch sizes): one
//! line naming the flag, the value, the range and a fix.

/// `flag value` must be at least 1 (`example`: a sensible value for the message).
pub fn at_least_one(flag: &str, value: usize, example: usize) -> anyhow::Result<()> {
    if value == 0 {
        anyhow::bail!(
            "{flag} 0 is out of range: it must be at least 1; pass e.g. {flag} {example}"
        );
    }
    Ok(())
}
