"""The records' database (SQLite on one host, PostgreSQL for replicas): `db` the connection
and transactions on either engine, `migrate` the numbered migrations (`migrations/`), and the
record stores built on them."""
