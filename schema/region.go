package schema

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// Region is a row of the regions table.
type Region struct {
	Name        string
	SuperRegion string // "" when in none
}

// ListRegions returns the regions this database serves, by name.
func (s *Store) ListRegions(ctx context.Context) ([]Region, error) {
	rows, err := s.pool.Query(ctx, `SELECT name, coalesce(super_region, '') FROM regions ORDER BY name`)
	if err != nil {
		return nil, classify(err)
	}
	rs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Region, error) {
		var x Region
		return x, r.Scan(&x.Name, &x.SuperRegion)
	})
	return rs, classify(err)
}

// HasRegion reports whether the database serves region.
func (s *Store) HasRegion(ctx context.Context, region string) (bool, error) {
	var ok bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM regions WHERE name = $1)`, region).Scan(&ok)
	return ok, classify(err)
}

func regionNames(ctx context.Context, q querier) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT name FROM regions ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list regions: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}
