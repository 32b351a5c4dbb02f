"""The SQL resource store (SQLAlchemy 2, async): SQLite embedded, PostgreSQL in production."""
