//! The hub's own files on this host, the same whatever driver runs the hub:
//! where `{runtime}` lies in a staged release (`layout.rs`), the settings
//! file that binds the hub to the configured appData (`settings.rs`), and
//! the store-and-forward files a runtime switch carries along (`carry.rs`).
//! The hub's fixed file names are in `names.rs`.

pub mod carry;
pub mod layout;
pub mod names;
pub mod settings;
