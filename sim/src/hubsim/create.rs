//! `hubsim create`: prepares appdata (certificate store, project) and
//! creates schema `orchestration` with this runtime's version, the
//! certificate-store fingerprint and the project; this node becomes the
//! preferred primary. Refuses when the schema exists.

use super::EXIT_REFUSED;
use super::appdata::AppData;
use super::cli::NodeArgs;
use super::db::{DbFailure, STARTUP_CONNECT_TIMEOUT};
use super::jdbc::JdbcTarget;
use super::log;
use super::schema::{self, CreateError, NewCluster};
use super::settings::Places;
use crate::timing::SimTiming;

/// Runs `create`; returns the exit code.
pub async fn run(args: NodeArgs, version: String, places: Places) -> i32 {
    let target = match JdbcTarget::resolve_for_logging(&args.jdbc) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let timing = SimTiming::from(args.timing);
    log::info(&format!(
        "hubsim {version} create: node {} appdata {} database {}",
        args.node,
        places.app_data.display(),
        target.display()
    ));
    tokio::time::sleep(timing.start_delay).await;

    let appdata = match prepare_appdata(&args, &places, &version) {
        Ok(a) => a,
        Err(e) => {
            log::error(&format!(
                "cannot prepare appdata {}: {e}",
                places.app_data.display()
            ));
            return EXIT_REFUSED;
        }
    };
    let (fingerprint, project) = match (appdata.certificate_fingerprint(), appdata.read_project()) {
        (Ok(f), Ok(p)) => (f, p),
        (Err(e), _) | (_, Err(e)) => {
            log::error(&format!(
                "cannot read appdata {}: {e}",
                places.app_data.display()
            ));
            return EXIT_REFUSED;
        }
    };

    let config = target.pg_config(STARTUP_CONNECT_TIMEOUT);
    let mut client = match tokio::time::timeout(
        STARTUP_CONNECT_TIMEOUT,
        config.connect(tokio_postgres::NoTls),
    )
    .await
    {
        Ok(Ok((client, connection))) => {
            tokio::spawn(async move {
                let _ = connection.await;
            });
            client
        }
        Ok(Err(e)) => {
            log::error(&format!(
                "cannot reach database {}: {}",
                target.display(),
                DbFailure::from(e)
            ));
            return EXIT_REFUSED;
        }
        Err(_) => {
            log::error(&format!(
                "cannot reach database {}: connection timed out",
                target.display()
            ));
            return EXIT_REFUSED;
        }
    };
    let new = NewCluster {
        version: &version,
        cert_fingerprint: &fingerprint,
        preferred_primary: &args.node,
        project: &project,
    };
    match schema::create_orchestration(&mut client, &new).await {
        Ok(()) => {}
        Err(CreateError::Exists(v)) => {
            let v = v.map(|v| format!(" (version {v})")).unwrap_or_default();
            log::error(&format!(
                "HA schema \"{}\" already exists in database {}{v}: drop it first (DROP SCHEMA {} CASCADE) or run `hubsim start`",
                schema::SCHEMA,
                target.dbname,
                schema::SCHEMA
            ));
            return EXIT_REFUSED;
        }
        Err(CreateError::Db(e)) => {
            log::error(&format!(
                "creating HA schema \"{}\" failed: {}",
                schema::SCHEMA,
                DbFailure::from(e)
            ));
            return EXIT_REFUSED;
        }
    }
    if let Err(e) = schema::ensure_hubdata(&client).await {
        log::warn(&format!(
            "cannot create data table hubdata.ticks yet: {}",
            DbFailure::from(e)
        ));
    }
    log::info(&format!(
        "created HA schema \"{}\": version {version}, preferred primary {}, certificate store sha256 {fingerprint}, project {} bytes",
        schema::SCHEMA,
        args.node,
        project.len()
    ));
    0
}

fn prepare_appdata(args: &NodeArgs, places: &Places, version: &str) -> std::io::Result<AppData> {
    let appdata = AppData::open(&places.app_data)?;
    if appdata.ensure_certificate_store()? {
        log::info(&format!(
            "generated certificate store {}",
            appdata.certificate_store_path().display()
        ));
    }
    if appdata.ensure_project(&args.node, version)? {
        log::info(&format!(
            "wrote default project {}",
            appdata.configuration_path().display()
        ));
    }
    Ok(appdata)
}
