package routing

import "net/http"

// Error codes WriteError answers with: each maps to an HTTP status, a gRPC status, a
// Connect code and an OAuth error.
const (
	CodeInvalidArgument    = "invalid_argument"
	CodeFailedPrecondition = "failed_precondition"
	CodeAborted            = "aborted"
	CodeUnavailable        = "unavailable"
)

var errorCodes = map[string]struct {
	status           int
	grpc, oauthError string
}{
	CodeInvalidArgument:    {http.StatusBadRequest, "3", "invalid_request"},
	CodeFailedPrecondition: {http.StatusBadRequest, "9", "invalid_request"},
	CodeAborted:            {http.StatusConflict, "10", "temporarily_unavailable"},
	CodeUnavailable:        {http.StatusServiceUnavailable, "14", "temporarily_unavailable"},
}

// WriteError answers r with an error in the caller's protocol: a gRPC status, a
// Connect error, a SCIM error under /t/{tenant}/scim/v2, or an OAuth error under the
// other /t/ endpoints. code is one of the Code constants (unknown codes answer
// unavailable).
func WriteError(w http.ResponseWriter, r *http.Request, code, msg string) {
	c, ok := errorCodes[code]
	if !ok {
		code, c = CodeUnavailable, errorCodes[CodeUnavailable]
	}
	writeError(w, r, c.status, c.grpc, code, c.oauthError, msg)
}
