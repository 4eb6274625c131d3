//! The `#[operation]` attribute of pgoutbox. Use it through `pgoutbox`,
//! which re-exports it.
