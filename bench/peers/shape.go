package peers

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// Shape is the RBAC data every system is loaded with, by index: identity i, group j
// (the group holding the members of role j), resource r.
type Shape struct {
	Identities, Groups, Resources int
	// Others are group members that are not among the checked identities (the load
	// bench's token principals, service accounts): identities Identities ..
	// Identities+Others-1. They hold tuples like everyone, but pairs are drawn from
	// the checked identities only, as the load bench's check workload does.
	Others  int
	Members [][]int // Members[i]: the groups identity i belongs to, ascending
	Grants  [][]int // Grants[r]: the groups whose members may view resource r, ascending
}

// Allowed is the answer the shape implies: identity i may view resource r when it is a
// member of a group resource r grants.
func (s *Shape) Allowed(i, r int) bool {
	for _, g := range s.Grants[r] {
		if _, ok := slices.BinarySearch(s.Members[i], g); ok {
			return true
		}
	}
	return false
}

// Tuple is one relationship: Subject has Relation on Object, in the OpenFGA notation
// ("user:1", "member", "group:2"; a subject set is "group:2#member").
type Tuple struct{ Subject, Relation, Object string }

// Object types and relations of the peers' model.
const (
	typeUser, typeGroup, typeResource = "user", "group", "resource"
	relMember, relViewer              = "member", "viewer"
)

func obj(typ string, i int) string { return typ + ":" + strconv.Itoa(i) }

// Tuples maps the shape to relationships: one member tuple per membership, one viewer
// tuple (a group's member set) per grant. Memberships first, then grants, each in
// index order.
func (s *Shape) Tuples() []Tuple {
	var out []Tuple
	for i, gs := range s.Members {
		for _, g := range gs {
			out = append(out, Tuple{Subject: obj(typeUser, i), Relation: relMember, Object: obj(typeGroup, g)})
		}
	}
	for r, gs := range s.Grants {
		for _, g := range gs {
			out = append(out, Tuple{Subject: obj(typeGroup, g) + "#" + relMember, Relation: relViewer, Object: obj(typeResource, r)})
		}
	}
	return out
}

// Seeded is what the keyplane tenant holds, by id: what LoadShape turns into a Shape.
type Seeded struct {
	Tenant, Region string
	Identities     []string // identity i's id
	Groups         []string // group j's id
	Roles          []string // role j's id (granted to group j)
	Resources      int
}

// queryer is the one pgx method LoadShape needs (*pgx.Conn, *pgxpool.Pool).
type queryer interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// LoadShape reads the tenant's group memberships and group bindings back from
// keyplane's database and returns them as a Shape. It refuses data the mapping cannot
// express faithfully: a binding that is not an unconditional, unexpiring allow of a
// seeded role to a seeded group on a scope res/<r>/, or a member that is not a seeded
// identity.
func LoadShape(ctx context.Context, db queryer, sd Seeded) (*Shape, error) {
	s := &Shape{Identities: len(sd.Identities), Groups: len(sd.Groups), Resources: sd.Resources,
		Members: make([][]int, len(sd.Identities)), Grants: make([][]int, sd.Resources)}
	ident, group, role := index(sd.Identities), index(sd.Groups), index(sd.Roles)
	rows, err := db.Query(ctx, `SELECT group_id::text, identity_id::text FROM group_members
WHERE crdb_region = $1 AND tenant_id = $2`, sd.Region, sd.Tenant)
	if err != nil {
		return nil, fmt.Errorf("read memberships: %w", err)
	}
	for rows.Next() {
		var gid, iid string
		if err := rows.Scan(&gid, &iid); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read memberships: %w", err)
		}
		g, gok := group[gid]
		if !gok {
			continue // a group the bench did not seed (the tenant's own)
		}
		i, iok := ident[iid]
		if !iok {
			i = len(s.Members)
			ident[iid] = i
			s.Members = append(s.Members, nil)
			s.Others++
		}
		s.Members[i] = append(s.Members[i], g)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read memberships: %w", err)
	}
	rows, err = db.Query(ctx, `SELECT principal_kind, principal_id::text, role_id::text, scope, effect, condition, expires_at IS NOT NULL
FROM bindings WHERE crdb_region = $1 AND tenant_id = $2`, sd.Region, sd.Tenant)
	if err != nil {
		return nil, fmt.Errorf("read bindings: %w", err)
	}
	for rows.Next() {
		var kind, pid, rid, scope, effect, cond string
		var expires bool
		if err := rows.Scan(&kind, &pid, &rid, &scope, &effect, &cond, &expires); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read bindings: %w", err)
		}
		_, seededRole := role[rid]
		_, seededGroup := group[pid]
		_, seededIdentity := ident[pid] // a checked identity, or another member of a seeded group
		if !seededRole && !seededGroup && !seededIdentity {
			continue // the tenant's own bindings (its owner, its service account)
		}
		if err := s.addGrant(kind, pid, rid, scope, effect, cond, expires, group, role); err != nil {
			rows.Close()
			return nil, err
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read bindings: %w", err)
	}
	for _, l := range s.Members {
		slices.Sort(l)
	}
	for r, l := range s.Grants {
		slices.Sort(l)
		s.Grants[r] = slices.Compact(l)
	}
	return s, nil
}

func (s *Shape) addGrant(kind, pid, rid, scope, effect, cond string, expires bool, group, role map[string]int) error {
	g, gok := group[pid]
	if kind != "group" || !gok {
		return fmt.Errorf("binding of role %s to %s %s: not one of the seeded groups", rid, kind, pid)
	}
	if _, ok := role[rid]; !ok {
		return fmt.Errorf("binding of group %d: role %s is not a seeded role", g, rid)
	}
	if effect != "allow" || cond != "" || expires {
		return fmt.Errorf("binding of group %d on %q: only unconditional, unexpiring allows map to a viewer tuple", g, scope)
	}
	n, ok := strings.CutPrefix(scope, "res/")
	n, ok2 := strings.CutSuffix(n, "/")
	r, err := strconv.Atoi(n)
	if !ok || !ok2 || err != nil || r < 0 || r >= s.Resources {
		return fmt.Errorf("binding of group %d: scope %q is not res/<0..%d>/", g, scope, s.Resources-1)
	}
	s.Grants[r] = append(s.Grants[r], g)
	return nil
}

func index(ids []string) map[string]int {
	m := make(map[string]int, len(ids))
	for i, id := range ids {
		m[id] = i
	}
	return m
}
