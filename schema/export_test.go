package schema

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// RunTx exposes the transaction helper to this package's black-box tests.
func (s *Store) RunTx(ctx context.Context, fn func(pgx.Tx) error) error { return s.tx(ctx, fn) }

// RehomedTables lists the tables RehomeTenant moves.
func RehomedTables() []string { return append(append([]string{}, tenantTables...), twoParentTables...) }
