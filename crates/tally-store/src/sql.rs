//! SQL helpers shared by every query: numbered placeholders, `in (...)` lists bound in
//! one place, and multi-row statements cut to the databases' limits.

use std::collections::HashSet;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AssertSqlSafe};

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
    (0..rows).map(|r| format!("({})", placeholders(r * cols + 1, cols))).collect::<Vec<_>>().join(", ")
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
/// of its keys, and collects their rows. Many keys are sent in several statements, each
/// with at most [`IN_KEYS`] of them.
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
    fn unique_keeps_the_first_of_each() {
        assert_eq!(unique(&[3, 1, 3, 2, 1]).copied().collect::<Vec<_>>(), [3, 1, 2]);
    }
}
