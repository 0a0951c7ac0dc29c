//! Names the hub itself gives its files and reads from its environment;
//! facts of the product, so the configuration's checks and the modules
//! that handle those files share them without depending on each other.

/// File name of the settings inside appData.
pub const SETTINGS_FILE: &str = "intelligencehub-settings.json";
/// Environment variable the hub reads its settings file's path from.
pub const SETTINGS_ENV: &str = "HIGHBYTE_SETTINGS_FILE";
/// Name prefix of the hub's store-and-forward files
/// (`intelligencehub-writestore-<connection>.db` and SQLite companions).
pub const WRITESTORE_PREFIX: &str = "intelligencehub-writestore-";
