package schema

import (
	"context"
	"fmt"
	"time"

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

// CheckRegion returns nil when the database serves region, else an error that names
// the regions it serves and wraps ErrNotFound.
func (s *Store) CheckRegion(ctx context.Context, region string) error {
	rs, err := s.ListRegions(ctx)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(rs))
	for _, r := range rs {
		if r.Name == region {
			return nil
		}
		names = append(names, r.Name)
	}
	return fmt.Errorf("region %q is not one of the database's regions %v: %w", region, names, ErrNotFound)
}

// CheckServes is what a node checks before it serves: the database answers, its
// schema is migrated, and it serves region. It gives up after 10 seconds.
func (s *Store) CheckServes(ctx context.Context, region string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.Ping(ctx); err != nil {
		return err
	}
	if err := s.CheckSchema(ctx); err != nil {
		return err
	}
	return s.CheckRegion(ctx, region)
}

func regionNames(ctx context.Context, q querier) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT name FROM regions ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list regions: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}
