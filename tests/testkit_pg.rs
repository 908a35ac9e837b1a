//! The PostgreSQL test harness against real servers.

#[path = "support/orphan.rs"]
mod orphan;
use orphan::alive;

use fts_testkit::pg::{Auth, PgServer};

fn proc_uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[tokio::test]
async fn start_query_crash_restart_and_drop() {
    let mut pg = PgServer::builder().start().await.expect("start");
    let port = pg.port();
    assert_eq!(pg.host(), "127.0.0.1");
    assert_eq!(
        pg.url(),
        format!("postgresql://postgres@127.0.0.1:{port}/postgres")
    );
    let pid = pg.pid().expect("running");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        assert_ne!(proc_uid(pid), Some(0), "server must not run as root");
    }

    let client = pg.client().await.expect("client");
    let one: i32 = client.query_one("select 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    client
        .batch_execute("create table t (x int); insert into t values (42)")
        .await
        .unwrap();

    pg.stop_immediate().expect("stop");
    assert!(!pg.is_running());
    assert!(
        !alive(pid),
        "postmaster {pid} still alive after stop_immediate"
    );
    assert!(client.simple_query("select 1").await.is_err());
    assert!(pg.data_dir().join("PG_VERSION").is_file(), "data dir kept");
    pg.stop_immediate()
        .expect("stopping a stopped server is a no-op");

    pg.start().await.expect("restart");
    assert_eq!(pg.port(), port, "restart keeps the port");
    assert!(
        pg.start().await.is_err(),
        "second start while running fails"
    );
    let client = pg.client().await.expect("client after restart");
    let x: i32 = client
        .query_one("select x from t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(x, 42, "committed data survives the crash");

    let dir = pg.base_dir().to_path_buf();
    let pid = pg.pid().expect("running");
    assert!(dir.is_dir());
    drop(pg);
    assert!(!dir.exists(), "drop removes {}", dir.display());
    assert!(!alive(pid), "drop stops postmaster {pid}");
    assert!(client.simple_query("select 1").await.is_err());
}

#[tokio::test]
async fn password_auth_settings_and_url() {
    let pg = PgServer::builder()
        .auth(Auth::Scram)
        .superuser("fts_admin")
        .password("p@ss word")
        .setting("work_mem", "7MB")
        .start()
        .await
        .expect("start");
    assert_eq!(
        pg.url(),
        format!(
            "postgresql://fts_admin:p%40ss%20word@127.0.0.1:{}/postgres",
            pg.port()
        )
    );
    let client = pg.client().await.expect("client");
    let row = client.query_one("show work_mem", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "7MB");
    let row = client
        .query_one(
            "select rolsuper from pg_roles where rolname = current_user",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));

    // The URL itself works with tokio-postgres.
    let config: tokio_postgres::Config = pg.url().parse().unwrap();
    let (c, conn) = config.connect(tokio_postgres::NoTls).await.expect("url");
    tokio::spawn(conn);
    c.simple_query("select 1").await.unwrap();

    // And the password is really checked.
    let mut wrong = pg.pg_config();
    wrong.password("nope");
    let err = wrong
        .connect(tokio_postgres::NoTls)
        .await
        .err()
        .expect("wrong password must fail");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD),
        "{err:?}"
    );
    assert!(pg.log_tail(20).contains("password authentication failed"));
}

#[tokio::test]
async fn password_auth_needs_a_password() {
    let err = PgServer::builder()
        .auth(Auth::Md5)
        .start()
        .await
        .expect_err("md5 without password");
    assert!(
        err.to_string().contains("needs a superuser password"),
        "{err}"
    );
}

const CHILD_ENV: &str = "FTSD_TESTKIT_PDEATHSIG_CHILD";

/// Runs only when re-executed by `postmaster_dies_with_the_test_process`: starts a server on a
/// runtime that is then dropped (the server must survive that), reports the postmaster's pid and
/// waits to be killed.
#[test]
fn pdeathsig_child_helper() {
    let Some(out) = orphan::helper_report_path(CHILD_ENV) else {
        return;
    };
    let rt = orphan::helper_runtime();
    let pg = rt.block_on(PgServer::builder().start()).expect("start");
    drop(rt);
    orphan::report_and_wait(&out, pg.pid().unwrap(), pg.base_dir());
}

#[test]
fn postmaster_dies_with_the_test_process() {
    orphan::assert_server_dies_with_killed_helper(
        "pdeathsig_child_helper",
        CHILD_ENV,
        "postmaster",
    );
}
