//! One small SQL layer over the two engines: SQLite (embedded, one file) and PostgreSQL
//! (fleets, several service instances on one database). Every statement is written once, in
//! the SQL both accept (`$1` placeholders, `ON CONFLICT`, integer division, CAST).

use anyhow::{Context, Result, anyhow, bail};
use std::sync::{Arc, Mutex};

/// A parameter or a column value. Typed nulls, because PostgreSQL checks a parameter's type
/// even when it is NULL.
#[derive(Debug, Clone, PartialEq)]
pub enum V {
    I(Option<i64>),
    F(Option<f64>),
    T(Option<String>),
}

impl V {
    pub fn int(&self) -> i64 {
        match self {
            V::I(Some(i)) => *i,
            V::F(Some(f)) => *f as i64,
            _ => 0,
        }
    }
    pub fn opt_int(&self) -> Option<i64> {
        match self {
            V::I(i) => *i,
            V::F(f) => f.map(|f| f as i64),
            V::T(_) => None,
        }
    }
    pub fn float(&self) -> Option<f64> {
        match self {
            V::F(f) => *f,
            V::I(i) => i.map(|i| i as f64),
            V::T(_) => None,
        }
    }
    pub fn text(&self) -> String {
        match self {
            V::T(Some(t)) => t.clone(),
            V::I(Some(i)) => i.to_string(),
            V::F(Some(f)) => f.to_string(),
            _ => String::new(),
        }
    }
    pub fn opt_text(&self) -> Option<String> {
        match self {
            V::T(t) => t.clone(),
            _ => None,
        }
    }
}

impl From<i64> for V {
    fn from(i: i64) -> V {
        V::I(Some(i))
    }
}
impl From<u64> for V {
    fn from(i: u64) -> V {
        V::I(Some(i64::try_from(i).unwrap_or(i64::MAX)))
    }
}
impl From<Option<u64>> for V {
    fn from(i: Option<u64>) -> V {
        V::I(i.map(|i| i64::try_from(i).unwrap_or(i64::MAX)))
    }
}
impl From<Option<f64>> for V {
    fn from(f: Option<f64>) -> V {
        V::F(f)
    }
}
impl From<bool> for V {
    fn from(b: bool) -> V {
        V::I(Some(b as i64))
    }
}
impl From<f64> for V {
    fn from(f: f64) -> V {
        V::F(Some(f))
    }
}
impl From<&str> for V {
    fn from(t: &str) -> V {
        V::T(Some(t.to_owned()))
    }
}
impl From<String> for V {
    fn from(t: String) -> V {
        V::T(Some(t))
    }
}
impl From<Option<String>> for V {
    fn from(t: Option<String>) -> V {
        V::T(t)
    }
}

pub type Row = Vec<V>;

#[derive(Clone)]
pub enum Db {
    Sqlite(Arc<Mutex<rusqlite::Connection>>),
    Postgres(Arc<Pg>),
}

/// A PostgreSQL connection and its prepared statements (each SQL text is prepared once).
pub struct Pg {
    client: tokio_postgres::Client,
    statements: Mutex<std::collections::HashMap<String, tokio_postgres::Statement>>,
}

impl Pg {
    async fn prepare(&self, sql: &str) -> Result<tokio_postgres::Statement> {
        if let Some(s) = self
            .statements
            .lock()
            .expect("no panics while locked")
            .get(sql)
        {
            return Ok(s.clone());
        }
        let statement = self.client.prepare(sql).await?;
        self.statements
            .lock()
            .expect("no panics while locked")
            .insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }
}

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/0001_init.sql")),
    (
        2,
        include_str!("../migrations/0002_consent_summary_log.sql"),
    ),
    (3, include_str!("../migrations/0003_occupancy_interval.sql")),
];

impl Db {
    /// `sqlite:PATH` or `postgres://...`; creates the tables on first use.
    pub async fn open(url: &str) -> Result<Db> {
        let db = if let Some(path) = url.strip_prefix("sqlite:") {
            let conn = rusqlite::Connection::open(path)
                .with_context(|| format!("cannot open the SQLite database {path}"))?;
            // WAL: the dashboard reads while ingest writes.
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            Db::Sqlite(Arc::new(Mutex::new(conn)))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .context("cannot connect to PostgreSQL")?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::error!("PostgreSQL connection lost: {e}");
                }
            });
            Db::Postgres(Arc::new(Pg {
                client,
                statements: Mutex::new(Default::default()),
            }))
        } else {
            bail!("--db takes sqlite:PATH or postgres://USER@HOST:PORT/DB, not {url:?}");
        };
        db.migrate().await?;
        Ok(db)
    }

    pub fn engine(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "SQLite",
            Db::Postgres(_) => "PostgreSQL",
        }
    }

    /// Applies the migrations not yet applied, each in a transaction. On PostgreSQL an
    /// advisory lock keeps two instances starting together from applying one twice.
    async fn migrate(&self) -> Result<()> {
        let create = "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY)";
        match self {
            Db::Sqlite(conn) => {
                let mut conn = conn.lock().expect("no panics while locked");
                conn.execute(create, [])?;
                for (version, sql) in MIGRATIONS {
                    let tx = conn.transaction()?;
                    let done: i64 = tx.query_row(
                        "SELECT count(*) FROM schema_migrations WHERE version = ?1",
                        [version],
                        |r| r.get(0),
                    )?;
                    if done == 0 {
                        tx.execute_batch(sql)
                            .with_context(|| format!("migration {version}"))?;
                        tx.execute("INSERT INTO schema_migrations VALUES (?1)", [version])?;
                    }
                    tx.commit()?;
                }
            }
            Db::Postgres(pg) => {
                let client = &pg.client;
                client
                    .batch_execute("SELECT pg_advisory_lock(7318001)")
                    .await?;
                let result = async {
                    client.batch_execute(create).await?;
                    for (version, sql) in MIGRATIONS {
                        let done = client
                            .query_opt(
                                "SELECT version FROM schema_migrations WHERE version = $1",
                                &[version],
                            )
                            .await?;
                        if done.is_none() {
                            client
                                .batch_execute(&format!(
                                    "BEGIN; {sql}; INSERT INTO schema_migrations VALUES ({version}); COMMIT;"
                                ))
                                .await
                                .with_context(|| format!("migration {version}"))?;
                        }
                    }
                    anyhow::Ok(())
                }
                .await;
                client
                    .batch_execute("SELECT pg_advisory_unlock(7318001)")
                    .await?;
                result?;
            }
        }
        Ok(())
    }

    /// Runs a statement; the number of rows it changed.
    pub async fn execute(&self, sql: &str, params: &[V]) -> Result<u64> {
        match self {
            Db::Sqlite(conn) => tokio::task::block_in_place(|| {
                let conn = conn.lock().expect("no panics while locked");
                let mut stmt = conn.prepare_cached(sql)?;
                bind(&mut stmt, params)?;
                Ok(stmt.raw_execute()? as u64)
            }),
            Db::Postgres(pg) => {
                let stmt = pg.prepare(sql).await?;
                let owned = pg_params(params);
                let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    owned.iter().map(|p| p.as_ref() as _).collect();
                Ok(pg.client.execute(&stmt, &refs).await?)
            }
        }
    }

    pub async fn query(&self, sql: &str, params: &[V]) -> Result<Vec<Row>> {
        match self {
            Db::Sqlite(conn) => tokio::task::block_in_place(|| {
                let conn = conn.lock().expect("no panics while locked");
                let mut stmt = conn.prepare_cached(sql)?;
                let columns = stmt.column_count();
                bind(&mut stmt, params)?;
                let mut rows = stmt.raw_query();
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    let values = (0..columns)
                        .map(|i| {
                            Ok(match row.get_ref(i)? {
                                rusqlite::types::ValueRef::Null => V::I(None),
                                rusqlite::types::ValueRef::Integer(i) => V::I(Some(i)),
                                rusqlite::types::ValueRef::Real(f) => V::F(Some(f)),
                                rusqlite::types::ValueRef::Text(t) => {
                                    V::T(Some(String::from_utf8_lossy(t).into_owned()))
                                }
                                rusqlite::types::ValueRef::Blob(_) => V::T(None),
                            })
                        })
                        .collect::<rusqlite::Result<Row>>()?;
                    out.push(values);
                }
                Ok(out)
            }),
            Db::Postgres(pg) => {
                let stmt = pg.prepare(sql).await?;
                let owned = pg_params(params);
                let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                    owned.iter().map(|p| p.as_ref() as _).collect();
                let rows = pg.client.query(&stmt, &refs).await?;
                rows.iter().map(pg_row).collect()
            }
        }
    }
}

/// Binds `$N` to `params[N-1]` by name: SQLite numbers `$N` parameters by first
/// appearance, not by N, so binding by position would swap them in `... $3 ... $1`.
fn bind(stmt: &mut rusqlite::CachedStatement<'_>, params: &[V]) -> Result<()> {
    for i in 1..=stmt.parameter_count() {
        let value = stmt
            .parameter_name(i)
            .and_then(|name| name.strip_prefix('$')?.parse::<usize>().ok())
            .and_then(|n| params.get(n.checked_sub(1)?))
            .ok_or_else(|| anyhow!("parameter {i} of a statement is not $1..${}", params.len()))?;
        stmt.raw_bind_parameter(i, Sqlite(value))?;
    }
    Ok(())
}

struct Sqlite<'a>(&'a V);

impl rusqlite::ToSql for Sqlite<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, Value};
        Ok(ToSqlOutput::Owned(match self.0 {
            V::I(Some(i)) => Value::Integer(*i),
            V::F(Some(f)) => Value::Real(*f),
            V::T(Some(t)) => Value::Text(t.clone()),
            _ => Value::Null,
        }))
    }
}

fn pg_params(params: &[V]) -> Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> {
    params
        .iter()
        .map(|p| -> Box<dyn tokio_postgres::types::ToSql + Sync + Send> {
            match p {
                V::I(i) => Box::new(*i),
                V::F(f) => Box::new(*f),
                V::T(t) => Box::new(t.clone()),
            }
        })
        .collect()
}

fn pg_row(row: &tokio_postgres::Row) -> Result<Row> {
    use tokio_postgres::types::Type;
    row.columns()
        .iter()
        .enumerate()
        .map(|(i, column)| {
            Ok(match *column.type_() {
                Type::INT8 => V::I(row.try_get::<_, Option<i64>>(i)?),
                Type::INT4 => V::I(row.try_get::<_, Option<i32>>(i)?.map(i64::from)),
                Type::INT2 => V::I(row.try_get::<_, Option<i16>>(i)?.map(i64::from)),
                Type::FLOAT8 => V::F(row.try_get::<_, Option<f64>>(i)?),
                Type::FLOAT4 => V::F(row.try_get::<_, Option<f32>>(i)?.map(f64::from)),
                Type::TEXT | Type::VARCHAR | Type::NAME => V::T(row.try_get(i)?),
                ref other => {
                    return Err(anyhow!(
                        "column {} has type {other}: cast it to BIGINT, DOUBLE PRECISION or TEXT",
                        column.name()
                    ));
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn sqlite_binds_dollar_parameters_by_number_not_by_appearance() {
        let db = Db::open("sqlite::memory:").await.unwrap();
        let rows = db
            .query(
                "SELECT $3, $1, $2",
                &[V::from(1i64), V::from("two"), V::from(3.5)],
            )
            .await
            .unwrap();
        assert_eq!(
            rows,
            vec![vec![
                V::F(Some(3.5)),
                V::I(Some(1)),
                V::T(Some("two".into()))
            ]]
        );
        let err = db.query("SELECT $4", &[V::from(1i64)]).await.unwrap_err();
        assert!(err.to_string().contains("not $1..$1"), "{err}");
    }
}
