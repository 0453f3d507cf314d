//! Runs one test body against SQLite (a fresh temporary file) and PostgreSQL (a fresh schema in
//! the database of `AIBRIDGE_TEST_POSTGRES_URL`), cleaning up afterwards even when the body
//! panics. Without the variable the PostgreSQL variant is skipped with a message, except in CI
//! (`CI=true`), where a missing variable or an unreachable server fails the test.

use std::future::Future;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use aibridge_store::{Store, open};
use sqlx::Connection;

pub const POSTGRES_URL_VAR: &str = "AIBRIDGE_TEST_POSTGRES_URL";

/// A migrated store on a database of its own.
#[derive(Debug)]
pub struct TestDb {
    pub store: Arc<dyn Store>,
    /// The URL the store was opened with (for reopening).
    pub url: String,
    place: Place,
}

#[derive(Debug)]
enum Place {
    File(PathBuf),
    Schema { admin_url: String, schema: String },
}

impl TestDb {
    pub async fn sqlite() -> TestDb {
        let path = std::env::temp_dir().join(format!(
            "aibridge-store-test-{}.db",
            uuid::Uuid::new_v4().simple()
        ));
        let url = format!("sqlite://{}", path.display());
        let store = open(&url).await.expect("open SQLite");
        store.migrate().await.expect("migrate SQLite");
        TestDb {
            store,
            url,
            place: Place::File(path),
        }
    }

    /// `None` (after saying why) when PostgreSQL is not configured outside CI.
    pub async fn postgres() -> Option<TestDb> {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        let admin_url = match std::env::var(POSTGRES_URL_VAR) {
            Ok(url) if !url.trim().is_empty() => url,
            _ if ci => panic!(
                "{POSTGRES_URL_VAR} is not set: CI must run the PostgreSQL tests \
                 (e.g. postgres://postgres@127.0.0.1:5432/test)"
            ),
            _ => {
                // Straight to stderr, past the test harness's capture, so the skip shows.
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED PostgreSQL variant of this test: {POSTGRES_URL_VAR} is not set \
                     (e.g. postgres://postgres@127.0.0.1:5432/test)"
                );
                return None;
            }
        };
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL from {POSTGRES_URL_VAR} is unreachable: {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut admin)
            .await
            .expect("create test schema");
        admin.close().await.ok();
        let sep = if admin_url.contains('?') { '&' } else { '?' };
        let url = format!("{admin_url}{sep}options=-csearch_path%3D{schema}");
        let place = Place::Schema { admin_url, schema };
        let store = match open(&url).await {
            Ok(store) => store,
            Err(e) => {
                place.remove().await;
                panic!("open PostgreSQL: {e}");
            }
        };
        if let Err(e) = store.migrate().await {
            store.close().await;
            place.remove().await;
            panic!("migrate PostgreSQL: {e}");
        }
        Some(TestDb { store, url, place })
    }

    /// A second store on the same database (the first one stays usable unless closed).
    pub async fn open_again(&self) -> Arc<dyn Store> {
        open(&self.url).await.expect("reopen")
    }

    async fn cleanup(&self) {
        self.store.close().await;
        self.place.remove().await;
    }
}

impl Place {
    async fn remove(&self) {
        match self {
            Place::File(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    let _ = std::fs::remove_file(p);
                }
            }
            Place::Schema { admin_url, schema } => {
                if let Ok(mut admin) = sqlx::PgConnection::connect(admin_url).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP SCHEMA IF EXISTS {schema} CASCADE"
                    )))
                    .execute(&mut admin)
                    .await;
                    admin.close().await.ok();
                }
            }
        }
    }
}

/// Runs `body` on a fresh database, then removes it; a panic in `body` is re-raised after.
pub async fn run<F, Fut>(db: Option<TestDb>, body: F)
where
    F: FnOnce(Arc<TestDb>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(db) = db else { return };
    let db = Arc::new(db);
    let outcome = tokio::spawn(body(db.clone())).await;
    db.cleanup().await;
    if let Err(e) = outcome {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("test task failed: {e}");
    }
}

/// `store_tests!(a, b)` defines `sqlite::a`, `postgres::a`, … each running the body `a(db)`
/// of the enclosing module against that backend.
#[allow(unused_macros)] // not every test binary uses it
macro_rules! store_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    crate::common::run(Some(crate::common::TestDb::sqlite().await), super::$name)
                        .await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    crate::common::run(crate::common::TestDb::postgres().await, super::$name)
                        .await;
                }
            )*
        }
    };
}

/// A `seq` no other record of this test run has: rows with the same interception and `seq` are
/// one row (a repeat is not inserted again).
pub fn next_seq() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
