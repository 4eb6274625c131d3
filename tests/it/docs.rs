//! The docs' claims about SQL objects, checked against the migrations and
//! a migrated database: the index table and the storage parameters in
//! `docs/tuning.md`.

use std::collections::BTreeMap;
use std::path::Path;

use crate::support::test_db;

fn repo_file(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn squash(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every index the migrations leave, by name: (`table (columns)`, the
/// predicate or `—`), parsed from their `CREATE [UNIQUE] INDEX` and
/// `DROP INDEX` statements, in order.
fn migration_indexes() -> BTreeMap<String, (String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pgoutbox-migrate/migrations");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    let mut indexes = BTreeMap::new();
    for file in files {
        let text: String = std::fs::read_to_string(&file)
            .unwrap()
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        for statement in text.split(';').map(squash) {
            let create = statement
                .strip_prefix("CREATE UNIQUE INDEX ")
                .or_else(|| statement.strip_prefix("CREATE INDEX "));
            if let Some(rest) = create {
                let (name, rest) = rest.split_once(" ON {schema}.").expect("ON {schema}.");
                // The column list, and an `INCLUDE (…)` list after it.
                let mut close = rest.find(')').expect("a column list");
                if rest[close + 1..].trim_start().starts_with("INCLUDE (") {
                    close += 1 + rest[close + 1..].find(')').expect("an INCLUDE list");
                }
                let on = rest[..=close].to_owned();
                let predicate = rest[close + 1..]
                    .trim()
                    .strip_prefix("WHERE ")
                    .map_or("—".to_owned(), str::to_owned);
                indexes.insert(name.to_owned(), (on, predicate));
            } else if let Some(name) = statement.strip_prefix("DROP INDEX {schema}.") {
                assert!(indexes.remove(name).is_some(), "dropped unknown {name}");
            }
        }
    }
    indexes
}

/// The rows of the index table in `docs/tuning.md`:
/// `| `name` | `table (columns)` | `predicate` or — | what it serves |`.
fn documented_indexes() -> BTreeMap<String, (String, String)> {
    let tuning = repo_file("docs/tuning.md");
    let cell = |c: &str| c.trim().trim_matches('`').to_owned();
    tuning
        .lines()
        .filter(|l| l.starts_with("| `") && l.contains("_idx`"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").collect();
            assert!(cells.len() >= 3, "{l}");
            (cell(cells[0]), (cell(cells[1]), cell(cells[2])))
        })
        .collect()
}

#[tokio::test]
async fn the_index_table_in_tuning_md_matches_the_migrations() {
    let migrations = migration_indexes();
    let documented = documented_indexes();
    assert_eq!(
        documented, migrations,
        "docs/tuning.md's index table (left) differs from the migrations (right)"
    );
    // And the parse above missed nothing the database has.
    let db = test_db().await;
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT indexname::text FROM pg_indexes WHERE schemaname = 'pgoutbox' \
         AND indexname NOT LIKE '%_pkey' ORDER BY 1",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert_eq!(names, migrations.keys().cloned().collect::<Vec<_>>());
}

#[tokio::test]
async fn the_storage_parameters_in_tuning_md_match_the_database() {
    let tuning = repo_file("docs/tuning.md");
    let db = test_db().await;
    let options: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, array_to_string(c.reloptions, ', ') FROM pg_class c \
         WHERE c.relnamespace = 'pgoutbox'::regnamespace AND c.reloptions IS NOT NULL \
         AND c.relkind = 'r' ORDER BY 1",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    assert!(!options.is_empty());
    for (table, option) in &options {
        let claim = format!("`{table}` (`{option}`)");
        assert!(
            tuning.contains(&claim),
            "docs/tuning.md does not say {claim}"
        );
    }
    let tables: Vec<&str> = options.iter().map(|(t, _)| t.as_str()).collect();
    for table in [
        "operations",
        "workers",
        "operation_types",
        "operator_actions",
    ] {
        if !tables.contains(&table) {
            let claim = format!("`{table}` (`");
            assert!(
                !tuning.contains(&claim),
                "{table} has no storage parameters"
            );
        }
    }
    assert!(!tuning.contains("no `fillfactor`"), "attempts has one");
}
