package authz_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/keyplane/keyplane/region/authz"
)

// The review answers (WhoCan, EffectivePermissions) must agree with Check: a reviewer
// who is told "these people can read it" must be told exactly the people Check lets
// read it. These properties are checked over random policies.

var (
	propScopes      = []string{"*", "a/", "a/b/", "a/b/c", "b/", "a/b/d"}
	propResources   = []string{"a/b/c", "a/b/d", "a/x", "b/y", "c/z"}
	propPermissions = []string{"docs.document.read", "docs.document.write", "docs.folder.list", "iam.roles.write"}
	propIdentities  = []string{"i0", "i1", "i2", "i3", "i4", "i5"}
	propGroups      = []string{"g0", "g1", "g2"}
	// Conditions over context.x and context.y, so that every outcome can be reached by
	// enumerating propContexts; the empty context makes them fail to evaluate.
	propConditions = []string{"context.x == true", "context.y == true", "context.x == true && context.y == false"}
	propContexts   = []map[string]any{{}, {"x": true, "y": true}, {"x": true, "y": false}, {"x": false, "y": true}, {"x": false, "y": false}}
)

// randomPolicy returns a policy of up to 12 bindings over propIdentities and
// propGroups; with conditions, about one binding in four is conditional. Some
// bindings expire before t0.
func randomPolicy(r *rand.Rand, conditions bool) authz.Policy {
	members := map[string][]string{}
	for _, g := range propGroups {
		for _, id := range propIdentities {
			if r.IntN(3) == 0 {
				members[g] = append(members[g], id)
			}
		}
	}
	p := authz.Policy{Revision: 1, Roles: testRoles, Members: members}
	for i := range r.IntN(13) {
		b := authz.Binding{
			ID:     fmt.Sprintf("b%d", i),
			RoleID: testRoles[r.IntN(len(testRoles))].ID,
			Scope:  propScopes[r.IntN(len(propScopes))],
			Effect: authz.Allow,
		}
		if r.IntN(3) == 0 {
			b.Effect = authz.Deny
		}
		if r.IntN(2) == 0 {
			b.PrincipalKind, b.PrincipalID = authz.KindIdentity, propIdentities[r.IntN(len(propIdentities))]
		} else {
			b.PrincipalKind, b.PrincipalID = authz.KindGroup, propGroups[r.IntN(len(propGroups))]
		}
		if r.IntN(8) == 0 {
			b.ExpiresAt = t0.Add(-time.Minute)
		}
		if conditions && r.IntN(4) == 0 {
			b.Condition = propConditions[r.IntN(len(propConditions))]
		}
		p.Bindings = append(p.Bindings, b)
	}
	return p
}

// principals is everyone a property is checked for, including an identity no binding
// or group names.
func principals() [][2]string {
	var out [][2]string
	for _, id := range append(slices.Clone(propIdentities), "stranger") {
		out = append(out, [2]string{authz.KindIdentity, id})
	}
	for _, g := range propGroups {
		out = append(out, [2]string{authz.KindGroup, g})
	}
	return out
}

// allowedIn reports, for each of propContexts, whether Check allows.
func allowedIn(s *authz.Snapshot, kind, id, perm, res string) []bool {
	out := make([]bool, len(propContexts))
	for i, c := range propContexts {
		out[i] = s.Check(authz.Request{PrincipalKind: kind, PrincipalID: id, Permission: perm, Resource: res, Time: t0, Context: c}).Allowed
	}
	return out
}

func TestPropertyWhoCanIsCheck(t *testing.T) {
	t.Parallel()
	env := newEnv(t, 0)
	for _, conditions := range []bool{false, true} {
		for seed := range uint64(400) {
			r := rand.New(rand.NewPCG(seed, 14))
			p := randomPolicy(r, conditions)
			s, err := env.Compile(p)
			if err != nil {
				t.Fatalf("seed %d: Compile: %v", seed, err)
			}
			for _, perm := range propPermissions {
				for _, res := range propResources {
					listed := map[[2]string]authz.Holder{}
					for _, h := range s.WhoCan(perm, res, t0) {
						listed[[2]string{h.Kind, h.ID}] = h
					}
					for _, pr := range principals() {
						h, in := listed[pr]
						allowed := allowedIn(s, pr[0], pr[1], perm, res)
						always, ever := !slices.Contains(allowed, false), slices.Contains(allowed, true)
						switch {
						case !conditions && in != allowed[0]:
							t.Fatalf("seed %d (%+v): %s %s: in WhoCan(%s, %s) = %v, Check allowed = %v", seed, p, pr[0], pr[1], perm, res, in, allowed[0])
						case in && !h.Conditional && !always:
							t.Fatalf("seed %d (%+v): %s %s is an unconditional holder of %s on %s, but Check allows only in contexts %v", seed, p, pr[0], pr[1], perm, res, allowed)
						case !in && ever:
							t.Fatalf("seed %d (%+v): %s %s is not in WhoCan(%s, %s), but Check allows in contexts %v", seed, p, pr[0], pr[1], perm, res, allowed)
						case !conditions && h.Conditional:
							t.Fatalf("seed %d: %s %s marked conditional in a policy without conditions", seed, pr[0], pr[1])
						}
					}
				}
			}
		}
	}
}

// decideFromGrants is what a reviewer concludes from EffectivePermissions: allowed when
// an unconditional allow grant covers the request and no deny grant does; denied when no
// allow grant covers it or an unconditional deny grant does; otherwise it depends on a
// condition.
func decideFromGrants(gs []authz.Grant, perm, res string) (allowed, denied bool) {
	var allow, condAllow, deny, condDeny bool
	for _, g := range gs {
		if !authz.MatchPermission(g.Permission, perm) || !authz.ScopeCovers(g.Scope, res) {
			continue
		}
		switch {
		case g.Effect == authz.Allow && g.Conditional:
			condAllow = true
		case g.Effect == authz.Allow:
			allow = true
		case g.Conditional:
			condDeny = true
		default:
			deny = true
		}
	}
	return allow && !deny && !condDeny, deny || !allow && !condAllow
}

func TestPropertyEffectivePermissionsIsCheck(t *testing.T) {
	t.Parallel()
	env := newEnv(t, 0)
	for _, conditions := range []bool{false, true} {
		for seed := range uint64(400) {
			r := rand.New(rand.NewPCG(seed, 41))
			p := randomPolicy(r, conditions)
			s, err := env.Compile(p)
			if err != nil {
				t.Fatalf("seed %d: Compile: %v", seed, err)
			}
			for _, id := range append(slices.Clone(propIdentities), "stranger") {
				gs := s.EffectivePermissions(id, t0)
				for _, perm := range propPermissions {
					for _, res := range propResources {
						allowedByGrants, deniedByGrants := decideFromGrants(gs, perm, res)
						allowed := allowedIn(s, authz.KindIdentity, id, perm, res)
						always, ever := !slices.Contains(allowed, false), slices.Contains(allowed, true)
						switch {
						case !conditions && allowedByGrants != allowed[0]:
							t.Fatalf("seed %d (%+v): %s: grants %+v say %s on %s allowed = %v, Check = %v", seed, p, id, gs, perm, res, allowedByGrants, allowed[0])
						case !conditions && deniedByGrants == allowedByGrants:
							t.Fatalf("seed %d: %s: grants leave %s on %s undecided in a policy without conditions", seed, id, perm, res)
						case allowedByGrants && !always:
							t.Fatalf("seed %d (%+v): %s: grants say %s on %s is always allowed, Check allows only in %v", seed, p, id, perm, res, allowed)
						case deniedByGrants && ever:
							t.Fatalf("seed %d (%+v): %s: grants say %s on %s is always denied, Check allows in %v", seed, p, id, perm, res, allowed)
						}
					}
				}
			}
		}
	}
}
