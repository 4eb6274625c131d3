//! pgoutbox's quickstart.
//!
//! Run it with `cargo run --example quickstart`. With `DATABASE_URL` unset it
//! starts a private PostgreSQL of its own (the local installation's), so it
//! needs no set-up; with `DATABASE_URL` set it uses a fresh database on that
//! server.

use pgoutbox::testing::TestDatabase;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = TestDatabase::new().await?;
    println!("database `{}` ready", db.name());
    let status = pgoutbox_migrate_status(&db).await?;
    println!("{status}");
    Ok(())
}

async fn pgoutbox_migrate_status(db: &TestDatabase) -> Result<String, sqlx::Error> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'pgoutbox' ORDER BY 1",
    )
    .fetch_all(db.pool())
    .await?;
    Ok(format!("pgoutbox storage: {}", tables.join(", ")))
}
