"""Everything that speaks SQL: engines, schema, tables, and one owner module per table."""
