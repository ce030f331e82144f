//! The PostgreSQL test helper (`common::pg`) itself: a throwaway server starts, answers the
//! superuser over its socket and the test's user over TCP with the password of `url()`, goes
//! away on `stop()` and comes back with its data on `start()`.

use crate::common;

use common::pg::PgServer;

#[test]
fn postgres_starts_stops_and_starts_again() {
    let mut pg = PgServer::launch();
    assert_eq!(pg.psql("SELECT 1"), "1");
    assert_eq!(
        pg.psql("SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = current_database()"),
        "UTF8"
    );

    // The URL works over TCP with the password, for its user, in its database.
    let mut client = postgres::Client::connect(&pg.url(), postgres::NoTls)
        .unwrap_or_else(|e| panic!("connect to {}: {e}\n{}", pg.url(), pg.log()));
    client
        .batch_execute("CREATE TABLE t (n int); INSERT INTO t VALUES (1), (2), (3)")
        .unwrap();
    let row = client
        .query_one("SELECT current_user::text, current_database()::text", &[])
        .unwrap();
    assert_eq!(row.get::<_, String>(0), pg.user);
    assert_eq!(row.get::<_, String>(1), pg.database);
    drop(client);
    // A wrong password is refused.
    let wrong = pg.url().replace(&pg.password, "not-the-password");
    assert!(postgres::Client::connect(&wrong, postgres::NoTls).is_err());
    assert_eq!(pg.psql("SELECT count(*) FROM t"), "3");

    pg.stop();
    assert!(!pg.is_running());
    assert!(
        !pg.accepts_tcp(),
        "port {} still open after stop()",
        pg.port
    );

    pg.start();
    assert!(pg.accepts_tcp());
    assert_eq!(pg.psql("SELECT count(*) FROM t"), "3");
    let mut client = postgres::Client::connect(&pg.url(), postgres::NoTls).unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM t", &[])
        .unwrap()
        .get(0);
    assert_eq!(n, 3);

    let root = pg.root().to_owned();
    drop(client);
    drop(pg);
    assert!(!root.exists(), "{} left behind", root.display());
}
