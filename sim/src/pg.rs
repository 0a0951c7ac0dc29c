//! A throwaway PostgreSQL for tests and the demo. With
//! `HUBSHIFT_TEST_DATABASE_URL` set, a fresh uniquely named database on that
//! server; otherwise a private cluster (`initdb` with a superuser password
//! and scram-sha-256 auth, `pg_ctl start` on a free 127.0.0.1 port, socket
//! directory inside the temporary directory), stopped and removed on drop —
//! or by its watchdog when the owning process dies without dropping it.
//! As root, the cluster runs as the `postgres` user.
//!
//! [`TestDatabase::create_database`] makes another database on the same
//! server (one per HA group of a fleet): the server lives as long as any of
//! its databases' handles.

use crate::lifetime::Watchdog;
use rand::Rng;
use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use thiserror::Error;
use tokio_postgres::{Client, NoTls};

/// Environment variable with the URL of an existing server to use instead
/// of a private cluster.
pub const DATABASE_URL_ENV: &str = "HUBSHIFT_TEST_DATABASE_URL";

/// Why no database is available.
#[derive(Debug, Error)]
pub enum PgError {
    /// A server binary is missing.
    #[error(
        "PostgreSQL server binary `{0}` not found (searched /usr/lib/postgresql/*/bin and PATH); install it with `apt-get install postgresql`"
    )]
    MissingBinary(String),
    /// A command failed.
    #[error("{what} failed: {detail}")]
    Command {
        /// Which command.
        what: String,
        /// Exit status and output tail.
        detail: String,
    },
    /// I/O.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The server.
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// A setting.
    #[error("{0}")]
    Config(String),
}

/// Finds a PostgreSQL server binary: newest `/usr/lib/postgresql/*/bin`
/// first, then `PATH`.
pub fn find_server_binary(name: &str) -> Result<PathBuf, PgError> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<(u32, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
                Some((v, e.path().join("bin")))
            })
            .collect();
        versions.sort_by_key(|v| std::cmp::Reverse(v.0));
        dirs.extend(versions.into_iter().map(|(_, p)| p));
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    find_in_dirs(name, &dirs)
}

/// Looks for `name` in `dirs`, in order.
pub fn find_in_dirs(name: &str, dirs: &[PathBuf]) -> Result<PathBuf, PgError> {
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| PgError::MissingBinary(name.into()))
}

/// A private cluster. Stopped and removed on drop; should its owner die
/// without dropping it, `watchdog` stops it and removes its directory.
struct Cluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    run_as: Option<(u32, u32)>,
    running: bool,
    // Declared last: dropped after `dir` is gone, so in an orderly teardown
    // it finds nothing left to do.
    _watchdog: Watchdog,
}

/// Where a throwaway cluster's files go: memory (`/dev/shm`) when the
/// machine has it with [`CLUSTER_ROOM`] to spare (and lets us write there),
/// else the temporary directory. The cluster keeps nothing worth a disk (it
/// runs without fsync), and a fleet's hundred schema drops and creations at
/// once made the file system's inode allocation — files of dropped tables
/// just deleted, new ones made — a contended part of every upgrade on it.
fn cluster_parent() -> Option<&'static Path> {
    crate::memory_dir::memory_dir(CLUSTER_ROOM)
}

/// Room a cluster in memory must leave: a fleet's hundred databases take
/// about a gigabyte.
const CLUSTER_ROOM: u64 = 2 << 30;

/// What the cluster's watchdog runs before removing its directory (`$1`).
/// `pg_ctl` refuses to run as root and the owner may be root, so it does
/// what `pg_ctl stop -m immediate` does: SIGQUIT to the postmaster named in
/// `postmaster.pid`, if that process really is this cluster's (its command
/// line names the data directory), then waits for it (a zombie counts as
/// gone: its cmdline is empty). PostgreSQL itself would run on: the
/// postmaster detaches from whoever started it and does not watch it.
const STOP_CLUSTER: &str = r#"cmdline() { tr '\0' ' ' < "/proc/$1/cmdline" 2>/dev/null; }
if [ -f "$1/data/postmaster.pid" ]; then
  read -r pid < "$1/data/postmaster.pid"
  case "$(cmdline "$pid")" in
    *"$1/data"*)
      kill -QUIT "$pid" 2>/dev/null
      i=0
      while [ -n "$(cmdline "$pid")" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
      ;;
  esac
fi"#;

impl Cluster {
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        c.current_dir(self.dir.path()).stdin(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            c.uid(uid).gid(gid);
        }
        c
    }

    fn pg_ctl(&self, args: &[&str]) -> Result<(), PgError> {
        let data = self.data();
        let log = self.dir.path().join("postgres.log");
        let out = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(args)
            .output()?;
        check(&format!("pg_ctl {}", args.join(" ")), out, Some(&log))
    }

    fn start(&mut self) -> Result<(), PgError> {
        self.pg_ctl(&["-w", "-t", "60", "start"])?;
        self.running = true;
        Ok(())
    }

    fn stop(&mut self) -> Result<(), PgError> {
        if self.running {
            self.pg_ctl(&["-w", "-t", "30", "-m", "immediate", "stop"])?;
            self.running = false;
        }
        Ok(())
    }

    /// A clean shutdown (`-m fast`: sessions cut, everything committed kept
    /// — the throwaway cluster runs without fsync and with asynchronous
    /// commits, so an immediate stop would also lose recent commits, which
    /// a production server does not).
    fn stop_fast(&mut self) -> Result<(), PgError> {
        if self.running {
            self.pg_ctl(&["-w", "-t", "30", "-m", "fast", "stop"])?;
            self.running = false;
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("hubshift-sim: stopping the throwaway PostgreSQL failed: {e}");
        }
    }
}

fn check(what: &str, out: Output, log: Option<&Path>) -> Result<(), PgError> {
    if out.status.success() {
        return Ok(());
    }
    let mut detail = format!(
        "{}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if let Some(text) = log.and_then(|l| std::fs::read_to_string(l).ok()) {
        let tail: Vec<&str> = text.lines().rev().take(10).collect();
        detail.push_str(" | server log: ");
        detail.push_str(&tail.into_iter().rev().collect::<Vec<_>>().join(" / "));
    }
    Err(PgError::Command {
        what: what.into(),
        detail: detail.replace('\n', " "),
    })
}

/// The server the databases live on, shared by their handles.
enum Server {
    /// Stopped when the last handle goes.
    Private(Mutex<Cluster>),
    /// Somebody else's; each handle drops its own database.
    External { admin: Box<tokio_postgres::Config> },
}

impl Server {
    fn cluster(&self) -> Option<MutexGuard<'_, Cluster>> {
        match self {
            // A panic while holding the lock leaves the cluster as usable as before.
            Server::Private(c) => Some(c.lock().unwrap_or_else(|e| e.into_inner())),
            Server::External { .. } => None,
        }
    }
}

/// A database of its own for one test (or one demo run, or one group of a
/// fleet), on a server it may share with the other databases made from it.
pub struct TestDatabase {
    host: String,
    port: u16,
    user: String,
    password: String,
    dbname: String,
    server: Arc<Server>,
}

/// Whether `name` is a plain lower-case SQL identifier (no quoting needed),
/// short enough for PostgreSQL with a suffix.
pub fn valid_database_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 40
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill(&mut b[..]);
    hex::encode(b)
}

fn free_port() -> Result<u16, PgError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn postgres_ids() -> Result<(u32, u32), PgError> {
    let name = CString::new("postgres").expect("no NUL");
    // SAFETY: getpwnam returns NULL or a pointer to static storage, read at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(PgError::Config(
            "running as root but there is no `postgres` user to run the cluster as; install it with `apt-get install postgresql`".into(),
        ));
    }
    // SAFETY: non-null pointer from getpwnam.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok((uid, gid))
}

/// The connection limit of a private cluster: a group and the tests'
/// own clients fit many times over.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 200;

impl TestDatabase {
    /// A fresh database: on `$HUBSHIFT_TEST_DATABASE_URL` if set, else in a
    /// private cluster.
    pub async fn create() -> Result<TestDatabase, PgError> {
        Self::create_reachable_from(None).await
    }

    /// Like [`TestDatabase::create`]; a private cluster also listens on
    /// `also.0` and admits clients of subnet `also.1` (e.g. a Docker
    /// network's gateway and subnet, for hubs in containers).
    pub async fn create_reachable_from(
        also: Option<(String, String)>,
    ) -> Result<TestDatabase, PgError> {
        match std::env::var(DATABASE_URL_ENV) {
            Ok(url) if !url.is_empty() => Self::create_external(&url).await,
            _ => Self::create_private(also, DEFAULT_MAX_CONNECTIONS).await,
        }
    }

    /// Like [`TestDatabase::create`], a private cluster admitting at least
    /// `clients` connections (a fleet's hubs, its controller and the
    /// harness; every hub holds connections for as long as it runs).
    pub async fn create_for_clients(clients: u32) -> Result<TestDatabase, PgError> {
        match std::env::var(DATABASE_URL_ENV) {
            Ok(url) if !url.is_empty() => Self::create_external(&url).await,
            _ => Self::create_private(None, clients.max(DEFAULT_MAX_CONNECTIONS)).await,
        }
    }

    async fn create_private(
        also: Option<(String, String)>,
        max_connections: u32,
    ) -> Result<TestDatabase, PgError> {
        let initdb = find_server_binary("initdb")?;
        find_server_binary("pg_ctl")?;
        let bin = initdb.parent().map(Path::to_path_buf).unwrap_or_default();
        if !bin.join("postgres").is_file() {
            return Err(PgError::MissingBinary("postgres".into()));
        }
        let run_as = if unsafe { libc::geteuid() } == 0 {
            Some(postgres_ids()?)
        } else {
            None
        };
        let in_memory = cluster_parent().and_then(|parent| {
            tempfile::Builder::new()
                .prefix("hubshift-pg-")
                .tempdir_in(parent)
                .ok()
        });
        let dir = match in_memory {
            Some(dir) => dir,
            None => tempfile::Builder::new().prefix("hubshift-pg-").tempdir()?,
        };
        let watchdog = Watchdog::spawn(dir.path(), STOP_CLUSTER)?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
        }
        let mut cluster = Cluster {
            dir,
            bin,
            run_as,
            running: false,
            _watchdog: watchdog,
        };
        let user = "hubshift".to_string();
        let password = random_hex(16);
        let pwfile = cluster.dir.path().join("pwfile");
        std::fs::write(&pwfile, format!("{password}\n"))?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid))?;
        }
        let sock = cluster.dir.path().join("sock");
        std::fs::create_dir(&sock)?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&sock, Some(uid), Some(gid))?;
        }
        let data = cluster.data();
        let out = cluster
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                &user,
                "-A",
                "scram-sha-256",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()?;
        std::fs::remove_file(&pwfile)?;
        check("initdb", out, None)?;
        let mut listen = "127.0.0.1".to_string();
        if let Some((address, subnet)) = &also {
            listen = format!("127.0.0.1,{address}");
            let hba = data.join("pg_hba.conf");
            let mut text = std::fs::read_to_string(&hba)?;
            text.push_str(&format!(
                "\n# hubshift sandbox: hubs in containers\nhost all all {subnet} scram-sha-256\n"
            ));
            std::fs::write(&hba, text)?;
        }

        let mut last_err = None;
        let mut port = 0;
        for _ in 0..5 {
            port = free_port()?;
            let settings = format!(
                "\n# hubshift sandbox\nlisten_addresses = '{listen}'\nport = {port}\nunix_socket_directories = '{}'\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = {max_connections}\n",
                sock.display()
            );
            let conf = data.join("postgresql.conf");
            let mut text = std::fs::read_to_string(&conf)?;
            text.push_str(&settings);
            std::fs::write(&conf, text)?;
            match cluster.start() {
                Ok(()) => {
                    last_err = None;
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        if let Some(e) = last_err {
            return Err(e);
        }
        let dbname = "hubshift".to_string();
        let db = TestDatabase {
            host: "127.0.0.1".into(),
            port,
            user,
            password,
            dbname: dbname.clone(),
            server: Arc::new(Server::Private(Mutex::new(cluster))),
        };
        let admin = db.connect_to("postgres").await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {dbname}"))
            .await?;
        Ok(db)
    }

    async fn create_external(url: &str) -> Result<TestDatabase, PgError> {
        let admin: tokio_postgres::Config = url
            .parse()
            .map_err(|e| PgError::Config(format!("{DATABASE_URL_ENV} is not a valid URL: {e}")))?;
        let host = match admin.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => {
                return Err(PgError::Config(format!(
                    "{DATABASE_URL_ENV} must name a TCP host"
                )));
            }
        };
        let port = admin.get_ports().first().copied().unwrap_or(5432);
        let user = admin
            .get_user()
            .ok_or_else(|| PgError::Config(format!("{DATABASE_URL_ENV} must name a user")))?
            .to_string();
        let password = admin
            .get_password()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        let dbname = format!("hubshift_test_{}", random_hex(6));
        let (client, conn) = admin.connect(NoTls).await?;
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {dbname}"))
            .await?;
        Ok(TestDatabase {
            host,
            port,
            user,
            password,
            dbname,
            server: Arc::new(Server::External {
                admin: Box::new(admin),
            }),
        })
    }

    /// `postgres://user:password@127.0.0.1:port/db`.
    pub fn url(&self) -> String {
        format!(
            "postgres://{}:{}@{}:{}/{}",
            self.user, self.password, self.host, self.port, self.dbname
        )
    }

    /// The JDBC URI with another host, as hubs elsewhere reach the server.
    pub fn jdbc_uri_via(&self, host: &str) -> String {
        format!(
            "jdbc:postgresql://{}:{}/{}?user={}&password={}",
            host, self.port, self.dbname, self.user, self.password
        )
    }

    /// `jdbc:postgresql://127.0.0.1:port/db?user=U&password=P`.
    pub fn jdbc_uri(&self) -> String {
        format!(
            "jdbc:postgresql://{}:{}/{}?user={}&password={}",
            self.host, self.port, self.dbname, self.user, self.password
        )
    }

    /// Server host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Server port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// User (a superuser on a private cluster).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// Database name.
    pub fn dbname(&self) -> &str {
        &self.dbname
    }

    /// Another database on the same server, for example one per HA group of
    /// a fleet. On a private cluster it is named `name`; on an external
    /// server (shared with other runs) `name` plus a random suffix, dropped
    /// with its handle. The server stays up while any handle lives.
    pub async fn create_database(&self, name: &str) -> Result<TestDatabase, PgError> {
        if !valid_database_name(name) {
            return Err(PgError::Config(format!(
                "database name {name:?}: use at most 40 lower-case letters, digits and underscores, not starting with a digit"
            )));
        }
        let dbname = match &*self.server {
            Server::Private(_) => name.to_string(),
            Server::External { .. } => format!("{name}_{}", random_hex(4)),
        };
        let admin = self.connect_to("postgres").await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {dbname}"))
            .await?;
        Ok(TestDatabase {
            host: self.host.clone(),
            port: self.port,
            user: self.user.clone(),
            password: self.password.clone(),
            dbname,
            server: Arc::clone(&self.server),
        })
    }

    /// Whether `other` lives on the same server as this database.
    pub fn same_server(&self, other: &TestDatabase) -> bool {
        Arc::ptr_eq(&self.server, &other.server)
    }

    /// The private cluster's directory (data, socket, log), which is gone
    /// once the server has stopped; `None` on an external server.
    pub fn server_dir(&self) -> Option<PathBuf> {
        self.server.cluster().map(|c| c.dir.path().to_path_buf())
    }

    /// A connection to the database (its task spawned on the current runtime).
    pub async fn connect(&self) -> Result<Client, PgError> {
        self.connect_to(&self.dbname).await
    }

    async fn connect_to(&self, dbname: &str) -> Result<Client, PgError> {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.host)
            .port(self.port)
            .user(&self.user)
            .password(&self.password)
            .dbname(dbname)
            .connect_timeout(Duration::from_secs(10));
        let (client, conn) = c.connect(NoTls).await?;
        tokio::spawn(conn);
        Ok(client)
    }

    /// Turns on TLS in a private cluster with the given server certificate
    /// and key (PEM), so clients can be tested with `sslmode=require`.
    /// Refused for an external server (its TLS is its administrator's).
    pub async fn enable_tls(&self, cert_pem: &str, key_pem: &str) -> Result<(), PgError> {
        {
            let Some(cluster) = self.server.cluster() else {
                return Err(PgError::Config(
                    "TLS can only be turned on in a private cluster".into(),
                ));
            };
            let data = cluster.data();
            for (name, body, mode) in [
                ("server.crt", cert_pem, 0o644),
                ("server.key", key_pem, 0o600),
            ] {
                let path = data.join(name);
                std::fs::write(&path, body)?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
                if let Some((uid, gid)) = cluster.run_as {
                    std::os::unix::fs::chown(&path, Some(uid), Some(gid))?;
                }
            }
        }
        let admin = self.connect_to("postgres").await?;
        // ALTER SYSTEM refuses to run in a transaction: one statement each.
        for statement in [
            "ALTER SYSTEM SET ssl_cert_file = 'server.crt'",
            "ALTER SYSTEM SET ssl_key_file = 'server.key'",
            "ALTER SYSTEM SET ssl = on",
            "SELECT pg_reload_conf()",
        ] {
            admin.batch_execute(statement).await?;
        }
        // The reload is asynchronous: wait until new sessions see it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let session = self.connect_to("postgres").await?;
            let row = session.query_one("SHOW ssl", &[]).await?;
            if row.get::<_, String>(0) == "on" {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                return Err(PgError::Config(
                    "the server did not turn TLS on within 20 s".into(),
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Makes the database go away: a private cluster is stopped
    /// (`pg_ctl stop -m immediate`, so every database on it goes away); on
    /// an external server connections to the database are refused and
    /// existing ones terminated.
    pub async fn suspend(&mut self) -> Result<(), PgError> {
        if let Some(mut c) = self.server.cluster() {
            return c.stop();
        }
        let admin = self.connect_to("postgres").await?;
        admin
            .batch_execute(&format!(
                "ALTER DATABASE {0} WITH ALLOW_CONNECTIONS false;
                 SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{0}';",
                self.dbname
            ))
            .await?;
        Ok(())
    }

    /// Restarts the server the way an operator or a service manager does:
    /// every session is cut, committed data is kept, and the database is
    /// away for `down` (a private cluster, with every database on it, is
    /// stopped with `-m fast` and started again; on an external server
    /// connections to this database are refused and cut for that long).
    pub async fn restart(&mut self, down: std::time::Duration) -> Result<(), PgError> {
        self.stop_for_restart().await?;
        tokio::time::sleep(down).await;
        self.resume().await
    }

    /// The first half of [`TestDatabase::restart`]: sessions cut, committed
    /// data kept, the database away until [`TestDatabase::resume`].
    pub async fn stop_for_restart(&mut self) -> Result<(), PgError> {
        match self.server.cluster().map(|mut c| c.stop_fast()) {
            Some(stopped) => stopped,
            None => self.suspend().await,
        }
    }

    /// Brings the database back after [`TestDatabase::suspend`].
    pub async fn resume(&mut self) -> Result<(), PgError> {
        if let Some(mut c) = self.server.cluster() {
            return c.start();
        }
        let admin = self.connect_to("postgres").await?;
        admin
            .batch_execute(&format!(
                "ALTER DATABASE {} WITH ALLOW_CONNECTIONS true",
                self.dbname
            ))
            .await?;
        Ok(())
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        match &*self.server {
            // The cluster stops itself when its last handle goes.
            Server::Private(_) => {}
            Server::External { admin } => {
                let admin = (**admin).clone();
                let dbname = self.dbname.clone();
                // Drop cannot await; a thread with its own runtime can.
                let done = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .ok()?;
                    rt.block_on(async {
                        let (client, conn) = admin.connect(NoTls).await.ok()?;
                        tokio::spawn(conn);
                        client
                            .batch_execute(&format!(
                                "DROP DATABASE IF EXISTS {dbname} WITH (FORCE)"
                            ))
                            .await
                            .ok()
                    })
                })
                .join();
                if !matches!(done, Ok(Some(()))) {
                    eprintln!("hubshift-sim: could not drop test database {}", self.dbname);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_plain_identifiers() {
        for good in ["plant_1", "_x", "hubshift"] {
            assert!(valid_database_name(good), "{good}");
        }
        let long = "a".repeat(41);
        for bad in [
            "",
            "plant-1",
            "1plant",
            "Plant",
            "a b",
            "x;drop",
            long.as_str(),
        ] {
            assert!(!valid_database_name(bad), "{bad}");
        }
    }

    #[test]
    fn missing_binary_is_one_line_with_the_fix() {
        let e = find_in_dirs("initdb", &[PathBuf::from("/nonexistent")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`initdb`") && e.contains("apt-get install postgresql"),
            "{e}"
        );
        assert!(!e.contains('\n'));
    }
}
