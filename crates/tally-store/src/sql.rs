//! SQL helpers shared by every query: numbered placeholders, `in (...)` lists bound in
//! one place, and multi-row statements cut to the databases' limits.

use std::collections::HashSet;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AssertSqlSafe, Row};

use crate::StoreError;

/// Rows per multi-row statement: far below both databases' limits on parameters.
pub const CHUNK: usize = 200;

/// Keys per `in (...)` list, for the same reason.
const IN_KEYS: usize = 500;

/// Most bytes of payload per statement. Under sqlx 0.9.0, which left Nagle on, a larger
/// one left the socket in more than one segment and the last waited for an ACK; 0.9.1
/// turns Nagle off, and the limit stays until a larger one is measured to help.
const STATEMENT_BYTES: usize = 48 * 1024;

/// `$from, $from+1, ...`, `n` of them.
pub fn placeholders(from: usize, n: usize) -> String {
    (from..from + n).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
}

/// `($1, .., $cols), ($cols+1, ..)`, for `rows` rows.
pub fn value_rows(rows: usize, cols: usize) -> String {
    value_rows_from(1, rows, cols)
}

/// [`value_rows`] numbered from `$first`.
fn value_rows_from(first: usize, rows: usize, cols: usize) -> String {
    (0..rows).map(|r| format!("({})", placeholders(first + r * cols, cols))).collect::<Vec<_>>().join(", ")
}

/// Runs `sql`, whose `{keys}` stands for an `in` list of `keys`, and collects its rows.
/// `lead` is bound first, as `$1`, when given (a time the statement compares with).
/// Many keys are sent in several statements.
pub async fn fetch_in<R>(
    conn: &mut AnyConnection,
    sql: &str,
    lead: Option<i64>,
    keys: &[&str],
) -> Result<Vec<R>, StoreError>
where
    R: for<'r> sqlx::FromRow<'r, AnyRow> + Send + Unpin,
{
    let first = if lead.is_some() { 2 } else { 1 };
    let mut rows = Vec::new();
    for chunk in keys.chunks(IN_KEYS) {
        let text = sql.replace("{keys}", &placeholders(first, chunk.len()));
        let mut query = sqlx::query_as::<_, R>(AssertSqlSafe(text));
        if let Some(lead) = lead {
            query = query.bind(lead);
        }
        for key in chunk {
            query = query.bind(*key);
        }
        rows.extend(query.fetch_all(&mut *conn).await?);
    }
    Ok(rows)
}

/// Runs `parts` as one `union all`: each a select whose `{keys}` stands for an `in` list
/// of its keys (a part without keys is left out), and collects their rows. Many keys
/// are sent in several statements.
pub async fn fetch_union<R>(conn: &mut AnyConnection, parts: &[(&str, &[&str])]) -> Result<Vec<R>, StoreError>
where
    R: for<'r> sqlx::FromRow<'r, AnyRow> + Send + Unpin,
{
    let per_part = IN_KEYS / parts.len().max(1);
    let rounds = parts.iter().map(|(_, keys)| keys.len().div_ceil(per_part)).max().unwrap_or(0);
    let mut rows = Vec::new();
    for round in 0..rounds {
        let chunks = parts.iter().filter_map(|(sql, keys)| Some((*sql, keys.chunks(per_part).nth(round)?)));
        let (mut selects, mut bound) = (Vec::new(), Vec::new());
        for (sql, chunk) in chunks {
            selects.push(sql.replace("{keys}", &placeholders(bound.len() + 1, chunk.len())));
            bound.extend_from_slice(chunk);
        }
        let mut query = sqlx::query_as::<_, R>(AssertSqlSafe(selects.join(" union all ")));
        for key in bound {
            query = query.bind(key);
        }
        rows.extend(query.fetch_all(&mut *conn).await?);
    }
    Ok(rows)
}

pub type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>;

/// Runs `sql` once per chunk, its `{rows}` replaced by a row of `cols` parameters for
/// each row, bound by `bind`; returns the rows the database inserted or updated.
pub async fn insert_rows<'q, T: 'q>(
    conn: &mut AnyConnection,
    sql: &str,
    cols: usize,
    chunks: impl IntoIterator<Item = &'q [T]>,
    bind: impl Fn(AnyQuery<'q>, &'q T) -> AnyQuery<'q>,
) -> Result<u64, StoreError> {
    let mut affected = 0;
    for chunk in chunks {
        let mut query = sqlx::query(AssertSqlSafe(sql.replace("{rows}", &value_rows(chunk.len(), cols))));
        for row in chunk {
            query = bind(query, row);
        }
        affected += query.execute(&mut *conn).await?.rows_affected();
    }
    Ok(affected)
}

/// Most parameters in one statement of [`Writes`]: half of what Postgres takes.
const STATEMENT_PARAMS: usize = 32_000;

/// A batch's multi-row writes, sent together. On Postgres each is a data-modifying
/// `with` query of one statement, so that all of them cost one round trip and one
/// statement's overhead; on SQLite, in the same process, they run one after another.
/// They write different tables (or different rows), so their order does not matter.
#[derive(Default)]
pub struct Writes<'q> {
    parts: Vec<Part<'q>>,
}

struct Part<'q> {
    /// An insert whose `{rows}` stands for its rows' parameters.
    sql: String,
    cols: usize,
    rows: usize,
    bytes: usize,
    /// Whether the rows it writes are counted in what [`Writes::execute`] returns.
    counted: bool,
    bind: Box<dyn FnOnce(AnyQuery<'q>) -> AnyQuery<'q> + Send + 'q>,
}

impl<'q> Writes<'q> {
    /// Adds the insert `sql` of `rows`, `cols` parameters a row, bound by `bind`.
    pub fn add<R: Copy + Send + 'q>(
        &mut self,
        sql: &str,
        cols: usize,
        rows: Vec<R>,
        bind: impl Fn(AnyQuery<'q>, R) -> AnyQuery<'q> + Clone + Send + 'q,
    ) {
        self.push(sql, cols, rows, |_| 0, false, bind);
    }

    /// [`Writes::add`] for an insert whose rows written are counted, with each row's
    /// size: a statement stays under [`STATEMENT_BYTES`] unless one row is larger.
    pub fn add_counted<R: Copy + Send + 'q>(
        &mut self,
        sql: &str,
        cols: usize,
        rows: Vec<R>,
        size: impl Fn(&R) -> usize,
        bind: impl Fn(AnyQuery<'q>, R) -> AnyQuery<'q> + Clone + Send + 'q,
    ) {
        self.push(sql, cols, rows, size, true, bind);
    }

    fn push<R: Copy + Send + 'q>(
        &mut self,
        sql: &str,
        cols: usize,
        rows: Vec<R>,
        size: impl Fn(&R) -> usize,
        counted: bool,
        bind: impl Fn(AnyQuery<'q>, R) -> AnyQuery<'q> + Clone + Send + 'q,
    ) {
        for chunk in by_size(&rows, &size) {
            let (chunk, bind) = (chunk.to_vec(), bind.clone());
            self.parts.push(Part {
                sql: sql.to_owned(),
                cols,
                rows: chunk.len(),
                bytes: chunk.iter().map(&size).sum(),
                counted,
                bind: Box::new(move |query| chunk.into_iter().fold(query, bind)),
            });
        }
    }

    /// Runs every write; returns the rows the counted ones wrote.
    pub async fn execute(self, conn: &mut AnyConnection) -> Result<u64, StoreError> {
        let together = conn.backend_name() == "PostgreSQL";
        let mut counted = 0;
        for statement in statements(self.parts, together) {
            counted += execute_together(conn, statement).await?;
        }
        Ok(counted)
    }
}

/// The parts in statements: each alone, or (`together`) as many in one as stay under
/// [`STATEMENT_PARAMS`] and [`STATEMENT_BYTES`].
fn statements(parts: Vec<Part<'_>>, together: bool) -> Vec<Vec<Part<'_>>> {
    let mut statements: Vec<Vec<Part>> = Vec::new();
    let (mut params, mut bytes) = (0, 0);
    for part in parts {
        let (p, b) = (part.rows * part.cols, part.bytes);
        match statements.last_mut() {
            Some(last) if together && params + p <= STATEMENT_PARAMS && bytes + b <= STATEMENT_BYTES => {
                last.push(part);
                (params, bytes) = (params + p, bytes + b);
            }
            _ => {
                statements.push(vec![part]);
                (params, bytes) = (p, b);
            }
        }
    }
    statements
}

#[cfg(test)]
impl Part<'_> {
    /// The part's shape without its parameters, for tests of the grouping.
    fn shape(&self) -> Part<'static> {
        Part { sql: self.sql.clone(), bytes: self.bytes, bind: Box::new(|q| q), ..*self }
    }
}

/// One part as it is, or several as the `with` queries of one Postgres statement.
async fn execute_together(conn: &mut AnyConnection, mut parts: Vec<Part<'_>>) -> Result<u64, StoreError> {
    if parts.len() == 1 {
        let part = parts.remove(0);
        let query = sqlx::query(AssertSqlSafe(part.sql.replace("{rows}", &value_rows(part.rows, part.cols))));
        let affected = (part.bind)(query).execute(&mut *conn).await?.rows_affected();
        return Ok(if part.counted { affected } else { 0 });
    }
    let (mut with, mut counts, mut first) = (Vec::new(), Vec::new(), 1);
    for (i, part) in parts.iter().enumerate() {
        let sql = part.sql.replace("{rows}", &value_rows_from(first, part.rows, part.cols));
        first += part.rows * part.cols;
        if part.counted {
            with.push(format!("w{i} as ({sql} returning 1)"));
            counts.push(format!("(select count(*) from w{i})"));
        } else {
            with.push(format!("w{i} as ({sql})"));
        }
    }
    let total = if counts.is_empty() { "0".to_owned() } else { counts.join(" + ") };
    let sql = format!("with {} select cast({total} as bigint)", with.join(", "));
    let mut query = sqlx::query(AssertSqlSafe(sql));
    // Each part's parameters, in the order the text numbers them.
    for part in parts {
        query = (part.bind)(query);
    }
    let written: i64 = query.fetch_one(&mut *conn).await?.try_get(0)?;
    Ok(written as u64)
}

/// `rows` in runs of at most [`STATEMENT_BYTES`] (one row at least) and [`CHUNK`] rows.
pub fn by_size<T>(rows: &[T], size: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut runs = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, row) in rows.iter().enumerate() {
        if i > start && (bytes + size(row) > STATEMENT_BYTES || i - start == CHUNK) {
            runs.push(&rows[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size(row);
    }
    if start < rows.len() {
        runs.push(&rows[start..]);
    }
    runs
}

/// Each key once, in first-seen order.
pub fn unique<K: Eq + std::hash::Hash>(keys: &[K]) -> impl Iterator<Item = &K> {
    let mut seen = HashSet::new();
    keys.iter().filter(move |k| seen.insert(*k))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_number_rows_and_lists() {
        assert_eq!(placeholders(2, 3), "$2, $3, $4");
        assert_eq!(value_rows(2, 2), "($1, $2), ($3, $4)");
    }

    #[test]
    fn statements_stay_under_the_byte_and_row_limits() {
        let rows = vec![30 * 1024, 30 * 1024, 10, 100 * 1024];
        let runs = by_size(&rows, |r| *r);
        assert_eq!(runs.iter().map(|r| r.len()).collect::<Vec<_>>(), [1, 2, 1], "one big row still goes alone");
        let many = vec![1; CHUNK + 1];
        assert_eq!(by_size(&many, |r| *r).len(), 2);
    }

    #[test]
    fn writes_share_a_statement_within_its_limits() {
        let mut writes = Writes::default();
        let small = vec![1u32; 3];
        writes.add("insert into a values {rows}", 2, small.clone(), |q, r| q.bind(i64::from(r)));
        let sizes = vec![30 * 1024usize, 30 * 1024];
        writes.add_counted("insert into e values {rows}", 1, sizes, |r| *r, |q, r| q.bind(r as i64));
        writes.add("insert into b values {rows}", 2, small, |q, r| q.bind(i64::from(r)));
        let shapes = |together| -> Vec<Vec<usize>> {
            let writes = Writes { parts: writes.parts.iter().map(Part::shape).collect() };
            statements(writes.parts, together).iter().map(|s| s.iter().map(|p| p.rows).collect()).collect()
        };
        // The two events exceed the bytes of one statement together: the second starts
        // the next, which the last table's rows join.
        assert_eq!(shapes(true), [vec![3, 1], vec![1, 3]]);
        assert_eq!(shapes(false), [vec![3], vec![1], vec![1], vec![3]]);
        let mut many = Writes::default();
        let rows = vec![1u32; 3 * CHUNK];
        many.add("insert into a values {rows}", 60, rows, |q, r| q.bind(i64::from(r)));
        let sizes: Vec<usize> = statements(many.parts, true).iter().map(|s| s.len()).collect();
        assert_eq!(sizes, [2, 1], "200 rows of 60 parameters a part, at most 32,000 parameters a statement");
    }

    #[test]
    fn unique_keeps_the_first_of_each() {
        assert_eq!(unique(&[3, 1, 3, 2, 1]).copied().collect::<Vec<_>>(), [3, 1, 2]);
    }
}
