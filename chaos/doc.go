// Package chaos will hold the failure drills and the invariant checkers
// (linearizable revocation, no lost acknowledged writes), built by the chaos issue.
package chaos
