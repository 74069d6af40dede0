package region

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/keyplane/keyplane/routing"
	"github.com/keyplane/keyplane/schema"
)

// IdempotencyKeyHeader names a client's key for a non-idempotent call: a retry with
// the same key gets the first call's response instead of making the change again
// (docs/routing.md, "Retries and idempotency keys"; docs/decisions/0018).
const IdempotencyKeyHeader = "Idempotency-Key"

// IdempotentReplayHeader is set on a response answered from the record of an earlier
// call with the same key.
const IdempotentReplayHeader = "Idempotent-Replayed"

// maxIdempotencyKey bounds a key's length.
const maxIdempotencyKey = 255

// idempotentAttempts bounds how often a keyed call runs when its transaction keeps
// failing on serialization conflicts (its body is kept, so it can run again).
const idempotentAttempts = 3

// idempotency serves non-idempotent calls that carry an Idempotency-Key. It runs on
// the node that serves the call (after routing), around the handlers:
//
//   - a key already recorded for the tenant answers with the recorded response when
//     the request is the same (procedure, credentials and body), and
//     failed_precondition when it is not;
//   - otherwise the call runs with a schema.IdempotentCall: its writes stay in one
//     open transaction, and when the handler answers with success the response is
//     sealed and recorded in that transaction, which then commits. An error answer
//     is not recorded; what the call wrote before it is committed as it would be
//     without a key (a failed login still counts against the lockout).
//
// A key on a safe call (reads, checks, introspection, revocation) is ignored: those
// may be sent again anyway.
func (n *Node) idempotency(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		keys := r.Header.Values(IdempotencyKeyHeader)
		if len(keys) == 0 || r.Method == http.MethodGet || r.Method == http.MethodHead || idempotent(r) {
			next.ServeHTTP(w, r)
			return
		}
		n.serveIdempotent(w, r, keys, next)
	})
}

func (n *Node) serveIdempotent(w http.ResponseWriter, r *http.Request, keys []string, next http.Handler) {
	ctx := r.Context()
	key, err := checkIdempotencyKey(keys)
	if err != nil {
		routing.WriteError(w, r, routing.CodeInvalidArgument, err.Error())
		return
	}
	if ct := r.Header.Get("Content-Type"); strings.HasPrefix(ct, "application/connect+") {
		routing.WriteError(w, r, routing.CodeInvalidArgument, IdempotencyKeyHeader+": streaming calls take no idempotency key")
		return
	}
	tenantID, err := routing.TenantOf(r)
	if err != nil || tenantID == "" {
		routing.WriteError(w, r, routing.CodeInvalidArgument, IdempotencyKeyHeader+": only tenant-scoped calls take an idempotency key (name the tenant in the "+routing.TenantHeader+" header)")
		return
	}
	if n.cfg.KEK == nil {
		routing.WriteError(w, r, routing.CodeFailedPrecondition, IdempotencyKeyHeader+": this node has no key-encryption key to seal recorded responses with")
		return
	}
	t, err := n.tenants.Tenant(ctx, tenantID, 0)
	var sc schema.Scope
	var fe *schema.FieldError
	switch {
	case errors.As(err, &fe):
		next.ServeHTTP(w, r) // a malformed tenant id: the handler refuses it, naming the field
		return
	case errors.Is(err, schema.ErrNotFound) && r.URL.Path == createTenantProcedure:
		// The call creates the tenant it names (checkTenantHeader holds the header to
		// the body's id): its record is the new tenant's, in the home region the call
		// gives it (CommitIdempotent reads it in the call's transaction).
		sc = schema.Scope{TenantID: tenantID}
	case errors.Is(err, schema.ErrNotFound):
		next.ServeHTTP(w, r) // the handler says the tenant does not exist, in its own words
		return
	case err != nil:
		routing.WriteError(w, r, routing.CodeUnavailable, "read tenant: "+err.Error())
		return
	default:
		sc = schema.Scope{TenantID: t.ID, Region: t.HomeRegion}
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxForwardBytes+1))
	if err != nil {
		routing.WriteError(w, r, routing.CodeInvalidArgument, "read request body: "+err.Error())
		return
	}
	if len(body) > maxForwardBytes {
		routing.WriteError(w, r, routing.CodeInvalidArgument, fmt.Sprintf("request body larger than %d bytes", maxForwardBytes))
		return
	}
	hash := requestHash(r, body)
	if sc.Region != "" && n.replayRecorded(w, r, sc, key, hash, false) {
		return
	}
	select {
	case n.idemSlots <- struct{}{}:
		defer func() { <-n.idemSlots }()
	case <-ctx.Done():
		return
	}
	for attempt := 1; ; attempt++ {
		// A retry after a conflict may find that a concurrent call with the key (a
		// hedged forward, a client's retry) committed: PostgreSQL reports the clash of
		// their records as a serialization failure.
		if attempt > 1 && n.replayConcurrent(w, r, sc, key, hash, false) {
			return
		}
		call := &schema.IdempotentCall{Scope: sc, Key: key, RequestHash: hash}
		defer call.Rollback(ctx) // a panicking handler must not keep the connection; a no-op once committed
		rec := newRecorder()
		run := r.Clone(schema.WithIdempotentCall(ctx, call))
		run.Body = io.NopCloser(bytes.NewReader(body))
		next.ServeHTTP(rec, run)
		resp := rec.recorded()
		if !call.Changed() {
			// Nothing was written (a refusal, an error, or a call that changed
			// nothing): nothing to record, and a retry runs it again.
			call.Rollback(ctx)
			if call.Retryable() && attempt < idempotentAttempts {
				continue
			}
			if !resp.succeeded() && n.replayConcurrent(w, r, sc, key, hash, false) {
				return // a copy of the call committed first, and this one clashed with its change
			}
			resp.writeTo(w, false)
			return
		}
		if call.Retryable() && attempt < idempotentAttempts {
			call.Rollback(ctx) // a statement failed on a conflict: run the call again
			continue
		}
		if !resp.succeeded() {
			// An error answer is not recorded, but what the call wrote before it stands,
			// as it would without a key: a failed login's count against the lockout, the
			// family a reused refresh token revoked. A retry runs the call again.
			if err := n.store.CommitUnrecorded(ctx, call); err != nil {
				routing.WriteError(w, r, routing.CodeUnavailable, "commit: "+err.Error())
				return
			}
			resp.writeTo(w, false)
			return
		}
		sealed, err := n.sealRecorded(sc, key, resp)
		if err != nil {
			call.Rollback(ctx)
			routing.WriteError(w, r, routing.CodeUnavailable, err.Error())
			return
		}
		err = n.store.CommitIdempotent(ctx, call, resp.Status, sealed)
		var ambiguous *schema.AmbiguousCommitError
		switch {
		case err == nil:
			n.metrics.idempotent.WithLabelValues("recorded").Inc()
			resp.writeTo(w, false)
		case errors.Is(err, schema.ErrIdempotencyConflict):
			if !n.replayConcurrent(w, r, sc, key, hash, true) {
				routing.WriteError(w, r, routing.CodeAborted, IdempotencyKeyHeader+": a call with this key completed concurrently but its record cannot be read; retry")
			}
		case call.Retryable() && attempt < idempotentAttempts:
			continue
		case errors.As(err, &ambiguous):
			routing.WriteError(w, r, routing.CodeUnavailable, "the commit's outcome is unknown; retry with the same "+IdempotencyKeyHeader+" to learn it")
		default:
			routing.WriteError(w, r, routing.CodeUnavailable, "record the call: "+err.Error()+"; retry with the same "+IdempotencyKeyHeader)
		}
		return
	}
}

// checkIdempotencyKey returns the one key of the header's values: 1 to 255 visible
// ASCII characters.
func checkIdempotencyKey(values []string) (string, error) {
	if len(values) != 1 {
		return "", fmt.Errorf("%s: %d values, want one", IdempotencyKeyHeader, len(values))
	}
	k := values[0]
	if k == "" || len(k) > maxIdempotencyKey {
		return "", fmt.Errorf("%s: want 1 to %d characters, got %d", IdempotencyKeyHeader, maxIdempotencyKey, len(k))
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x21 || k[i] > 0x7e {
			return "", fmt.Errorf("%s: only visible ASCII characters (a UUID is a good key)", IdempotencyKeyHeader)
		}
	}
	return k, nil
}

// requestHash is what a key stands for: the method, path, content type, credentials
// and body. A retry must present the same credentials: the recorded response may
// hold a secret shown once, and only its first caller may see it again.
func requestHash(r *http.Request, body []byte) []byte {
	h := sha256.New()
	for _, part := range []string{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Get("Content-Type"), r.Header.Get("Authorization")} {
		fmt.Fprintf(h, "%d:%s\n", len(part), part)
	}
	h.Write(body)
	return h.Sum(nil)
}

// replayConcurrent is replayRecorded for a record that a concurrent copy of the call
// may have committed while this one ran: a copy that failed on the winner's change (a
// clash on a unique name, the tenant CreateTenant made) answers with the winner's
// response. A call that created its tenant has its region read again first. It
// answers only when a record exists.
func (n *Node) replayConcurrent(w http.ResponseWriter, r *http.Request, sc schema.Scope, key string, hash []byte, refuseOther bool) bool {
	ctx := r.Context()
	if sc.Region == "" {
		t, err := n.store.GetTenant(ctx, sc.TenantID)
		if err != nil {
			return false
		}
		sc.Region = t.HomeRegion
	}
	rec, err := n.store.LookupIdempotency(ctx, sc, key)
	if err != nil {
		return false
	}
	return n.answerRecorded(w, r, sc, key, hash, rec, refuseOther)
}

// replayRecorded answers from the key's record of this very request (same hash), if
// there is one, and reports whether it answered. A record of another request is
// refused with failed_precondition only when refuseOther: that is, only once the call
// authenticated and succeeded and its own record clashed with it. Before that the call
// runs (and its caller's credentials are checked), so that nobody learns from a
// refusal that a tenant used a key, and a caller reusing a key for another request
// gets failed_precondition at commit, its change rolled back.
func (n *Node) replayRecorded(w http.ResponseWriter, r *http.Request, sc schema.Scope, key string, hash []byte, refuseOther bool) bool {
	rec, err := n.store.LookupIdempotency(r.Context(), sc, key)
	if errors.Is(err, schema.ErrNotFound) {
		return false
	}
	if err != nil {
		routing.WriteError(w, r, routing.CodeUnavailable, err.Error())
		return true
	}
	return n.answerRecorded(w, r, sc, key, hash, rec, refuseOther)
}

// answerRecorded answers from rec, read for the key, as replayRecorded says.
func (n *Node) answerRecorded(w http.ResponseWriter, r *http.Request, sc schema.Scope, key string, hash []byte, rec schema.IdempotentResponse, refuseOther bool) bool {
	if !rec.SameRequest(hash) && !refuseOther {
		return false
	}
	if !rec.SameRequest(hash) {
		n.metrics.idempotent.WithLabelValues("mismatch").Inc()
		routing.WriteError(w, r, routing.CodeFailedPrecondition, IdempotencyKeyHeader+": this key was used for another request (another call, body or credentials) in the last 24 hours; use a new key")
		return true
	}
	plain, err := n.cfg.KEK.Open(rec.Sealed, idempotencyAD(sc, key))
	if err != nil {
		routing.WriteError(w, r, routing.CodeUnavailable, "open the recorded response: "+err.Error())
		return true
	}
	var resp recordedResponse
	if err := json.Unmarshal(plain, &resp); err != nil {
		routing.WriteError(w, r, routing.CodeUnavailable, "decode the recorded response: "+err.Error())
		return true
	}
	n.metrics.idempotent.WithLabelValues("replayed").Inc()
	resp.Status = rec.Status
	resp.writeTo(w, true)
	return true
}

func idempotencyAD(sc schema.Scope, key string) []byte {
	return []byte("idempotency\x00" + sc.TenantID + "\x00" + key)
}

func (n *Node) sealRecorded(sc schema.Scope, key string, resp recordedResponse) ([]byte, error) {
	plain, err := json.Marshal(resp)
	if err != nil {
		return nil, fmt.Errorf("encode the response: %w", err)
	}
	return n.cfg.KEK.Seal(plain, idempotencyAD(sc, key)), nil
}

// recordedResponse is a response as recorded: the headers the handler set (not the
// per-hop ones), its body and its trailers.
type recordedResponse struct {
	Status  int         `json:"-"`
	Header  http.Header `json:"h"`
	Body    []byte      `json:"b"`
	Trailer http.Header `json:"t,omitempty"`
}

// notRecorded are headers that describe one delivery, not the response.
var notRecorded = map[string]bool{"Date": true, "Content-Length": true, routing.RouteHeader: true, "Keyplane-Served-By": true}

// writeTo writes the response; replayed marks it as answered from a record.
func (rr recordedResponse) writeTo(w http.ResponseWriter, replayed bool) {
	h := w.Header()
	for k, v := range rr.Header {
		h[k] = v
	}
	if replayed {
		h.Set(IdempotentReplayHeader, "true")
	}
	w.WriteHeader(rr.Status)
	_, _ = w.Write(rr.Body)
	for k, v := range rr.Trailer {
		h[http.TrailerPrefix+k] = v
	}
}

// recorder keeps a handler's response so that it can be recorded before the client
// sees it. It implements http.Flusher as a no-op: the response goes out whole.
type recorder struct {
	header      http.Header
	wroteHeader bool
	status      int
	sent        http.Header // the header at WriteHeader
	body        bytes.Buffer
}

func newRecorder() *recorder { return &recorder{header: http.Header{}} }

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(status int) {
	if r.wroteHeader {
		return
	}
	r.wroteHeader, r.status, r.sent = true, status, r.header.Clone()
}

func (r *recorder) Write(p []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	return r.body.Write(p)
}

func (r *recorder) Flush() {}

// recorded returns the response: the header as sent, and as trailers the values set
// after it under a name the header declared in Trailer, or with http.TrailerPrefix.
func (r *recorder) recorded() recordedResponse {
	r.WriteHeader(http.StatusOK)
	out := recordedResponse{Status: r.status, Header: http.Header{}, Body: r.body.Bytes()}
	for k, v := range r.sent {
		if !notRecorded[k] && !strings.HasPrefix(k, http.TrailerPrefix) {
			out.Header[k] = v
		}
	}
	for k, v := range r.header {
		name, prefixed := strings.CutPrefix(k, http.TrailerPrefix)
		if !prefixed && !declaredTrailer(r.sent, k) {
			continue
		}
		if out.Trailer == nil {
			out.Trailer = http.Header{}
		}
		out.Trailer[http.CanonicalHeaderKey(name)] = v
	}
	if out.Trailer != nil {
		delete(out.Header, "Trailer")
	}
	return out
}

func declaredTrailer(h http.Header, name string) bool {
	for _, v := range h.Values("Trailer") {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), name) {
				return true
			}
		}
	}
	return false
}

// succeeded reports whether the handler answered with success: a 2xx status and, for
// gRPC, status 0.
func (rr recordedResponse) succeeded() bool {
	if rr.Status < 200 || rr.Status > 299 {
		return false
	}
	if strings.HasPrefix(rr.Header.Get("Content-Type"), "application/grpc") {
		return rr.Trailer.Get("Grpc-Status") == "0"
	}
	return true
}

// idempotencySlots bounds the keyed calls a node runs at once: each holds a database
// connection from its first write to its commit, so at most half the pool.
func idempotencySlots(maxConns int32) chan struct{} {
	return make(chan struct{}, max(1, int(maxConns)/2))
}
