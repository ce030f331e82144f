//! Reading another media store's database: SQLite (a file) or PostgreSQL (a `postgres://` URL),
//! as rows of loosely typed values. Only reads; the columns a table has are asked first, so
//! one query works across the schema versions of the source.

use anyhow::Context;

/// One value of a row.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// NULL.
    Null,
    /// An integer (or a boolean, as SQLite stores it).
    Int(i64),
    /// Text.
    Text(String),
    /// A boolean (PostgreSQL).
    Bool(bool),
    /// Bytes.
    Bytes(Vec<u8>),
}

impl SqlValue {
    /// The text, if it is some.
    pub fn text(&self) -> Option<&str> {
        match self {
            SqlValue::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if it is one.
    pub fn int(&self) -> Option<i64> {
        match self {
            SqlValue::Int(i) => Some(*i),
            SqlValue::Text(s) => s.parse().ok(),
            _ => None,
        }
    }

    /// Truthiness (SQLite stores booleans as 0/1).
    pub fn truthy(&self) -> bool {
        match self {
            SqlValue::Bool(b) => *b,
            SqlValue::Int(i) => *i != 0,
            SqlValue::Text(s) => matches!(s.as_str(), "t" | "true" | "1"),
            _ => false,
        }
    }
}

/// The value of column `name` in `row` (selected with `names`); NULL when absent.
pub fn col<'a>(row: &'a [SqlValue], names: &[&str], name: &str) -> &'a SqlValue {
    names
        .iter()
        .position(|n| *n == name)
        .and_then(|i| row.get(i))
        .unwrap_or(&SqlValue::Null)
}

/// A thumbnail method as both sources spell it.
pub fn method_of(s: &str) -> Option<media_ledger_events::ThumbnailMethod> {
    match s {
        "crop" => Some(media_ledger_events::ThumbnailMethod::Crop),
        "scale" => Some(media_ledger_events::ThumbnailMethod::Scale),
        _ => None,
    }
}

/// A time in ms (0 when NULL or negative).
pub fn millis(v: &SqlValue) -> u64 {
    v.int().and_then(|i| u64::try_from(i).ok()).unwrap_or(0)
}

/// A source database.
pub enum Db {
    /// A SQLite file.
    Sqlite(rusqlite::Connection),
    /// A PostgreSQL server.
    Postgres(Box<postgres::Client>),
}

impl Db {
    /// Opens `spec`: a `postgres://` / `postgresql://` URL, else a SQLite file (read-only).
    pub fn open(spec: &str) -> anyhow::Result<Self> {
        if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
            let client = postgres::Client::connect(spec, postgres::NoTls)
                .with_context(|| format!("connecting to {}", redact(spec)))?;
            Ok(Db::Postgres(Box::new(client)))
        } else {
            if !std::path::Path::new(spec).is_file() {
                anyhow::bail!("{}: no such database file", redact(spec));
            }
            let conn = rusqlite::Connection::open_with_flags(
                spec,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .with_context(|| format!("opening SQLite database {}", redact(spec)))?;
            // Fails here, not halfway, when the file is not a database.
            conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))
                .with_context(|| format!("{} is not a readable SQLite database", redact(spec)))?;
            Ok(Db::Sqlite(conn))
        }
    }

    /// The column names of `table` (empty when it does not exist).
    pub fn columns(&mut self, table: &str) -> anyhow::Result<Vec<String>> {
        match self {
            Db::Sqlite(c) => {
                let mut st = c.prepare("SELECT name FROM pragma_table_info(?1)")?;
                let names = st
                    .query_map([table], |r| r.get::<_, String>(0))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(names)
            }
            Db::Postgres(c) => Ok(c
                .query(
                    "SELECT column_name::text FROM information_schema.columns \
                     WHERE table_name = $1 AND table_schema = current_schema()",
                    &[&table],
                )?
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect()),
        }
    }

    /// Every row of `SELECT <columns> FROM <table>`; a column the table lacks reads as NULL.
    /// `table` and `columns` are this program's constants, never input.
    pub fn select(&mut self, table: &str, columns: &[&str]) -> anyhow::Result<Vec<Vec<SqlValue>>> {
        let have = self.columns(table)?;
        if have.is_empty() {
            return Ok(Vec::new());
        }
        let list = columns
            .iter()
            .map(|c| {
                if have.iter().any(|h| h == c) {
                    (*c).to_owned()
                } else {
                    "NULL".to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!("SELECT {list} FROM {table}");
        match self {
            Db::Sqlite(c) => {
                let mut st = c.prepare(&sql)?;
                let n = columns.len();
                let rows = st
                    .query_map([], |r| {
                        (0..n)
                            .map(|i| {
                                Ok(match r.get_ref(i)? {
                                    rusqlite::types::ValueRef::Null => SqlValue::Null,
                                    rusqlite::types::ValueRef::Integer(v) => SqlValue::Int(v),
                                    rusqlite::types::ValueRef::Real(v) => SqlValue::Int(v as i64),
                                    rusqlite::types::ValueRef::Text(t) => {
                                        SqlValue::Text(String::from_utf8_lossy(t).into_owned())
                                    }
                                    rusqlite::types::ValueRef::Blob(b) => {
                                        SqlValue::Bytes(b.to_vec())
                                    }
                                })
                            })
                            .collect::<Result<Vec<_>, rusqlite::Error>>()
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            }
            Db::Postgres(c) => {
                let rows = c.query(sql.as_str(), &[])?;
                Ok(rows.iter().map(pg_row).collect())
            }
        }
    }
}

fn pg_row(row: &postgres::Row) -> Vec<SqlValue> {
    use postgres::types::Type;
    (0..row.len())
        .map(|i| {
            let ty = row.columns().get(i).map(|c| c.type_().clone());
            match ty {
                Some(Type::INT2) => row
                    .try_get::<_, Option<i16>>(i)
                    .ok()
                    .flatten()
                    .map_or(SqlValue::Null, |v| SqlValue::Int(v.into())),
                Some(Type::INT4) => row
                    .try_get::<_, Option<i32>>(i)
                    .ok()
                    .flatten()
                    .map_or(SqlValue::Null, |v| SqlValue::Int(v.into())),
                Some(Type::INT8) => row
                    .try_get::<_, Option<i64>>(i)
                    .ok()
                    .flatten()
                    .map_or(SqlValue::Null, SqlValue::Int),
                Some(Type::BOOL) => row
                    .try_get::<_, Option<bool>>(i)
                    .ok()
                    .flatten()
                    .map_or(SqlValue::Null, SqlValue::Bool),
                Some(Type::BYTEA) => row
                    .try_get::<_, Option<Vec<u8>>>(i)
                    .ok()
                    .flatten()
                    .map_or(SqlValue::Null, SqlValue::Bytes),
                _ => row
                    .try_get::<_, Option<String>>(i)
                    .ok()
                    .flatten()
                    .map_or(SqlValue::Null, SqlValue::Text),
            }
        })
        .collect()
}

/// A database URL without its secrets, for messages: the password of the user part becomes
/// `***`, a query string (`?password=…`, `?user=…`) is shown as `?***`; a string that is not a
/// URL but holds `password=` (a libpq key/value string) is not shown at all.
pub fn redact(spec: &str) -> String {
    if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
        return match reqwest::Url::parse(spec) {
            Ok(mut url) => {
                if url.password().is_some() {
                    let _ = url.set_password(Some("***"));
                }
                if url.query().is_some() {
                    url.set_query(Some("***"));
                }
                url.set_fragment(None);
                url.to_string()
            }
            Err(_) => "a postgres:// URL that does not parse".to_owned(),
        };
    }
    if spec.contains("password=") {
        return "a connection string".to_owned();
    }
    spec.to_owned()
}
