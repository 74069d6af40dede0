// Package client is the application side of keyplane: it calls the nearest healthy
// region's Connect API and fails over to the next region.
//
// A Client is configured with regional endpoints. A background prober sends
// GET /readyz to every endpoint every ProbeInterval and keeps a moving average of
// the round trips; each call goes to the regions listed in Config.Prefer first, then
// to the nearest region (spread over its equally near endpoints), skipping endpoints
// that are not ready or that failed a moment ago. Generated clients use it through its HTTP client and options:
//
//	c, err := client.New(client.Config{Endpoints: []client.Endpoint{
//		{Region: "eu-west", URL: "http://eu-west.keyplane.internal:8080"},
//		{Region: "us-east", URL: "http://us-east.keyplane.internal:8080"},
//	}})
//	if err != nil { ... }
//	defer c.Close()
//	auth := keyplanev1connect.NewAuthServiceClient(c.HTTPClient(), client.BaseURL, c.Options()...)
//
// The interceptor also sets the Keyplane-Tenant header from the request's tenant_id
// field, so whichever node receives the call can forward it to the tenant's home
// region without decoding the body.
//
// # Which calls are retried
//
// An attempt that fails with Unavailable, or that runs out of its AttemptTimeout, is
// retried on another endpoint (the next region once the nearest region's endpoints
// have failed) only when repeating it cannot do harm. The client reads that from
// the idempotency level each RPC declares in its .proto:
//
//   - NO_SIDE_EFFECTS RPCs only read: ValidateToken, Check and CheckBulk (whose only
//     trace is one more entry in the decision log), the Get* and List* RPCs, WhoCan
//     and EffectivePermissions. Running one twice is the same as once.
//   - IDEMPOTENT RPCs converge to the same state however often they run:
//     RevokeToken, RevokeSession, RevokeIdentityTokens, RevokeCredential,
//     DisableTenant/EnableTenant and DisableIdentity/EnableIdentity. A retry after a
//     lost answer finds the revocation already done and succeeds again.
//
// Every other RPC has side effects. When it names a tenant (nearly all of them do;
// CreateTenant names the one it creates) the interceptor gives it a fresh
// Idempotency-Key, unless the caller set one: the
// serving node records the call's response with its change and answers any copy of
// the call from that record, so a retry cannot apply it twice, and the client retries
// it like the calls above. That covers creations (a second live secret nobody holds
// cannot appear), updates, deletions, rotations, SetPassword, ExchangeAPIKey and
// Login (one session), Refresh (the retry gets the first attempt's tokens instead of
// tripping reuse detection), EnrollTOTP and ConfirmTOTP (the same secret and codes),
// and the elevation workflow's steps, and CreateTenant (the retry gets the one admin
// client secret). A call that failed is not recorded: its retry runs again, so a
// refused Login still counts once per attempt against the lockout.
//
// Calls without a tenant (the operator's cluster calls) carry no key
// and are retried only when the request provably never left the client (the
// connection was refused, or could not be set up before the attempt timed out).
//
// Other codes (PermissionDenied, InvalidArgument, NotFound, ...) are the server's
// answer and are returned at once, and so is an error after the caller's context
// ended. Retries are paced by a jittered exponential backoff and limited by a retry
// budget (RetryBudget, MinRetries), so that a failing region cannot make clients
// multiply the load on the others; an endpoint that failed on the transport is
// tried last for DownFor, so that calls after the first few go straight to a
// healthy region without spending retries. Streaming calls are never retried.
package client
