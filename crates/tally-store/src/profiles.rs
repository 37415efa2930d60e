//! `TALLY_SYNC_PROFILES`: the app's own `profiles` table (the guide's shape) kept up to
//! date with tally's accounts, for apps that read the tier and credits from it while they
//! move to tally's API (docs/MIGRATING.md).
//!
//! The copy is written by the batch that changed the accounts, in its transaction, so it
//! can never show a balance tally did not commit. It is an `update` only: a user without
//! a row in the app's table is skipped, and tally never creates or deletes its rows. The
//! table is read once at start, and each value is cast to its column's type, so that a
//! `uuid` id, an `integer` credits column or an enum tier works as the app made it.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Row};
use tally_core::Catalogue;

use crate::StoreError;
use crate::postgres::check_identifier;
use crate::sql::{CHUNK, insert_rows};

/// The columns tally writes, beside `id`.
const COLUMNS: [&str; 4] = ["id", "tier", "credits", "stripe_customer_id"];

/// The app's table, as found at start.
#[derive(Debug, Clone)]
pub struct ProfilesTable {
    /// `schema.table`, as configured.
    name: String,
    /// The update of a batch of rows; `{rows}` stands for its `values` list.
    update: String,
    /// The id column is a `uuid`: a user id that is not one cannot have a row there.
    uuid_ids: bool,
    /// The largest number the credits column holds, when it is smaller than tally's.
    credits_max: Option<i64>,
}

/// One account's values, as the app's table gets them.
pub struct Profile<'a> {
    pub user_id: &'a str,
    pub tier: &'a str,
    pub credits: i64,
    pub stripe_customer_id: Option<&'a str>,
}

/// Splits `schema.table` (or `table`, in `public`), each part an identifier.
pub fn parse_table_name(name: &str) -> Result<(String, String), String> {
    let (schema, table) = name.split_once('.').unwrap_or(("public", name));
    check_identifier(schema)?;
    check_identifier(table)?;
    Ok((schema.to_owned(), table.to_owned()))
}

impl ProfilesTable {
    /// Reads the table's columns and checks that tally can write what it holds: every
    /// column is there, the id is text or a uuid, and an enum tier names every tier of
    /// `catalogue`. Each problem is an error naming the table.
    pub async fn find(pool: &AnyPool, name: &str, catalogue: &Catalogue) -> Result<ProfilesTable, StoreError> {
        let problem = |why: String| StoreError::Invalid(format!("TALLY_SYNC_PROFILES: {name}: {why}"));
        let (schema, table) = parse_table_name(name).map_err(problem)?;
        let qualified = format!("\"{schema}\".\"{table}\"");
        let rows: Vec<AnyRow> = sqlx::query(
            "select a.attname::text as name, format_type(a.atttypid, a.atttypmod) as type,
                    t.typtype::text as kind, a.atttypid::bigint as oid
             from pg_attribute a join pg_type t on t.oid = a.atttypid
             where a.attrelid = to_regclass($1) and a.attnum > 0 and not a.attisdropped",
        )
        .bind(&qualified)
        .fetch_all(pool)
        .await?;
        if rows.is_empty() {
            return Err(problem("no such table".into()));
        }
        let column = |wanted: &str| -> Result<(String, String, i64), StoreError> {
            rows.iter()
                .find(|r| r.get::<String, _>("name") == wanted)
                .map(|r| (r.get::<String, _>("type"), r.get::<String, _>("kind"), r.get::<i64, _>("oid")))
                .ok_or_else(|| problem(format!("has no column {wanted} (it needs {})", COLUMNS.join(", "))))
        };
        let [id, tier, credits, customer] =
            [column(COLUMNS[0])?, column(COLUMNS[1])?, column(COLUMNS[2])?, column(COLUMNS[3])?];

        let uuid_ids = id.0 == "uuid";
        if !uuid_ids && !is_text(&id.0) {
            return Err(problem(format!("id is {}; tally's user ids are text, so it must be text or uuid", id.0)));
        }
        if tier.1 == "e" {
            let labels: Vec<String> =
                sqlx::query_scalar("select enumlabel::text from pg_enum where enumtypid = $1::bigint::oid")
                    .bind(tier.2)
                    .fetch_all(pool)
                    .await?;
            let tiers =
                std::iter::once(tally_core::catalogue::FREE).chain(catalogue.plans.iter().map(|p| p.id.as_str()));
            if let Some(missing) = tiers.into_iter().find(|t| !labels.iter().any(|l| l == t)) {
                return Err(problem(format!("its tier enum {} has no value {missing:?}", tier.0)));
            }
        }
        let credits_max = match credits.0.as_str() {
            "integer" => Some(i64::from(i32::MAX)),
            "smallint" => Some(i64::from(i16::MAX)),
            "bigint" | "numeric" | "real" | "double precision" => None,
            other if other.starts_with("numeric") => None,
            other => return Err(problem(format!("credits is {other}; it must be a number type"))),
        };
        let update = format!(
            "update {qualified} as p
             set tier = v.tier::{tier}, credits = v.credits::{credits},
                 stripe_customer_id = coalesce(v.customer::{customer}, p.stripe_customer_id)
             from (values {{rows}}) as v(id, tier, credits, customer)
             where p.id = v.id::{id}",
            tier = tier.0,
            credits = credits.0,
            customer = customer.0,
            id = id.0,
        );
        Ok(ProfilesTable { name: name.to_owned(), update, uuid_ids, credits_max })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Writes `profiles` into the app's table, inside the caller's transaction.
    pub async fn write(&self, conn: &mut AnyConnection, profiles: &[Profile<'_>]) -> Result<u64, StoreError> {
        let rows: Vec<&Profile> = profiles.iter().filter(|p| !self.uuid_ids || is_uuid(p.user_id)).collect();
        let max = self.credits_max;
        let clamp = move |credits: i64| match max {
            // Past what the column holds, the most it can hold, rather than a batch that
            // fails (and every webhook with it) over a copy.
            Some(max) if credits > max => max,
            _ => credits,
        };
        insert_rows(conn, &self.update, 4, rows.chunks(CHUNK), |q, p| {
            q.bind(p.user_id).bind(p.tier).bind(clamp(p.credits)).bind(p.stripe_customer_id)
        })
        .await
    }
}

fn is_text(sql_type: &str) -> bool {
    sql_type == "text" || sql_type.starts_with("character varying") || sql_type.starts_with("character(")
}

/// `8-4-4-4-12` hex digits: the only ids a `uuid` column can hold as tally spells them.
fn is_uuid(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_name_is_schema_and_table_identifiers() {
        assert_eq!(parse_table_name("public.profiles"), Ok(("public".into(), "profiles".into())));
        assert_eq!(parse_table_name("profiles"), Ok(("public".into(), "profiles".into())));
        assert!(parse_table_name("public.profiles; drop table x").is_err());
        assert!(parse_table_name("a.b.c").is_err());
        assert!(parse_table_name("Public.Profiles").is_err());
    }

    #[test]
    fn only_canonical_uuids_match_a_uuid_column() {
        assert!(is_uuid("4d1c2f7a-0b9e-4c1d-8e2f-1a2b3c4d5e6f"));
        assert!(!is_uuid("alice"));
        assert!(!is_uuid("4d1c2f7a0b9e4c1d8e2f1a2b3c4d5e6f"));
        assert!(!is_uuid("4d1c2f7a-0b9e-4c1d-8e2f-1a2b3c4d5e6g"));
    }
}
