package history

import (
	"time"
)

// OpKind is what an operation in a history did.
type OpKind string

// Operation kinds.
const (
	// Revoke takes access away (revoke a token or session, disable an identity,
	// remove a binding). OK means it was acknowledged.
	Revoke OpKind = "revoke"
	// Read asks whether access exists (validate a token, check a permission).
	// Granted is its answer when OK.
	Read OpKind = "read"
	// Call is any other call of the load (issue a token, an admin write).
	Call OpKind = "call"
)

// Op is one recorded call. Start is taken before the request is sent and End after
// its answer arrived, on one monotonic clock.
type Op struct {
	Kind    OpKind
	Tenant  string
	Key     string // what the access is to: a token, a session, a binding
	Start   time.Time
	End     time.Time
	OK      bool   // the call returned an answer (no error)
	Granted bool   // for reads: the answer was active/allowed
	Node    string // Keyplane-Served-By of the answer: region/node
	Name    string // validate, check, issue, revoke, write
	Client  string // the application instance (region/app-N) that made the call
	Err     string // the Connect code of a failed call
	Route   string // Keyplane-Route of the answer
	Safe    bool   // the call may be repeated (the client retries it on another region)
}
