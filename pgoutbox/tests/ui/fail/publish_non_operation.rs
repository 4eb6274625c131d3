use pgoutbox::prelude::*;

#[derive(serde::Serialize)]
struct NotAnOperation {
    to: String,
}

async fn publish_it(pool: sqlx::PgPool) {
    let mut tx = pool.begin().await.unwrap();
    publish::<NotAnOperation>(&mut tx, NotAnOperation { to: String::new() }).await.unwrap();
}

fn main() {
    let _ = publish_it;
}
