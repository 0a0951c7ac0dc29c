//! The value of every key a configuration may leave out (the schema's
//! `#[serde(default = …)]`), kept apart so the documented defaults
//! (docs/agent-config.md) are read in one place.

pub(super) fn default_listen() -> String {
    "0.0.0.0:7443".into()
}
pub(super) fn default_certificate_store() -> String {
    "intelligencehub-certificatestore.pkcs12".into()
}
pub(super) fn default_working_dir() -> String {
    "{runtime}".into()
}
pub(super) fn default_stop_timeout() -> u64 {
    60
}
pub(super) fn default_create_timeout() -> u64 {
    300
}
pub(super) fn default_log_max() -> u64 {
    10 * 1024 * 1024
}
pub(super) fn default_active_pattern() -> String {
    "HA role: active".into()
}
pub(super) fn default_standby_pattern() -> String {
    "HA role: standby".into()
}
pub(super) fn default_docker_socket() -> String {
    "/var/run/docker.sock".into()
}
pub(super) fn default_appdata_target() -> String {
    "/usr/local/highbyte/appData".into()
}
pub(super) fn default_runtime_target() -> String {
    "/usr/local/highbyte/runtime".into()
}
pub(super) fn default_docker_args() -> Vec<String> {
    vec!["start".into()]
}
pub(super) fn default_start_mode_start() -> String {
    "HA".into()
}
pub(super) fn default_log_tail_lines() -> u32 {
    5000
}
pub(super) fn default_probe_path() -> String {
    "{appdata}/intelligencehub-events.log".into()
}
pub(super) fn default_probe_timeout() -> u64 {
    5
}
pub(super) fn default_max_archive_bytes() -> u64 {
    4 * 1024 * 1024 * 1024
}
pub(super) fn default_max_entries() -> u64 {
    200_000
}
pub(super) fn default_max_concurrent_uploads() -> u32 {
    4
}
pub(super) fn default_upload_idle_timeout() -> u64 {
    60
}
pub(super) fn default_max_connections() -> u32 {
    256
}
pub(super) fn default_handshake_timeout() -> u64 {
    10
}
pub(super) fn default_keepalive_interval() -> u64 {
    30
}
pub(super) fn default_keepalive_timeout() -> u64 {
    20
}

pub(super) fn default_metrics_max_connections() -> u32 {
    8
}
