// Package peers measures keyplane's fresh Check next to OpenFGA, SpiceDB and the
// raw-SQL floor, side by side on one machine, in one run (`keyplane bench peers`,
// `make bench-peers`).
//
// Run builds the peers at pinned versions from the Go module proxy (cached under
// --bin-dir), starts a seeded keyplane node on a private PostgreSQL
// (bench.StartCheckTarget), reads the RBAC shape keyplane's seeding granted back from
// its database (LoadShape) and writes the same relationships into each peer
// (Shape.Tuples), each peer on its own database of the same PostgreSQL. Every system
// then answers the same sample of (identity, resource) pairs, and the run fails unless
// all answers agree with the shape; then each system is driven by the same closed
// loop (same concurrency, duration and pair distribution) and measured with an HDR
// histogram, its server process's CPU time and RSS read from /proc.
//
// The mapping, for each keyplane group j (which holds the members of role j) and each
// resource r that binds role j to group j on scope res/r/:
//
//	user:i  member  group:j           (identity i is a member of group j)
//	group:j#member  viewer  resource:r (resource r grants role j to group j's members)
//	resource view/can_view = viewer   (every role grants the one bench permission)
//
// The floor is the one point read any fresh decision must make: the identity row by
// primary key, with raw pgx, at the same concurrency.
package peers
