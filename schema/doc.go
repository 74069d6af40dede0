// Package schema is the only package in keyplane that speaks SQL.
//
// It owns the migrations for both dialects (CockroachDB in production, PostgreSQL for
// development, tests, demo and benchmarks), the typed [Store] whose methods are the
// only way to read or change data, and the transaction helper that runs every
// transaction at SERIALIZABLE through cockroach-go so 40001 retries work on both
// engines.
//
// Every per-tenant table carries tenant_id and crdb_region; every statement on such a
// table names both, so on CockroachDB a read is a point read at the home region's
// leaseholder and never fans out. Every mutation writes its audit_events row in the
// same transaction as the change.
package schema
