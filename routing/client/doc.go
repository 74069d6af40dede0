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
// Every other RPC is retried only when the request provably never left the client
// (the connection was refused, or could not be set up before the attempt timed
// out), because a server that answered Unavailable or stopped answering may have
// applied it, and replaying it elsewhere would act twice:
//
//   - creations (CreateTenant, CreateIdentity, CreateAPIKey, CreateClient,
//     CreateRole, CreateGroup, CreateBinding, ...) would write twice, and for
//     credentials leave a second live secret that nobody holds; updates, deletions,
//     rotations and SetPassword could apply twice or answer a confusing NotFound;
//   - ExchangeAPIKey and Login each open a session, so a replay opens a second
//     one, and a replayed failed Login counts twice against the lockout;
//   - Refresh rotates the refresh token: the first attempt may have consumed it,
//     and presenting it again trips reuse detection, which revokes the whole
//     session, so the caller would be logged out by its own retry;
//   - EnrollTOTP and ConfirmTOTP return secrets and recovery codes once;
//   - RequestElevation, ApproveElevation, DenyElevation and EndElevation are steps
//     of an audited workflow, each recorded once.
//
// Other codes (PermissionDenied, InvalidArgument, NotFound, ...) are the server's
// answer and are returned at once, and so is an error after the caller's context
// ended. Retries are paced by a jittered exponential backoff and limited by a retry
// budget (RetryBudget, MinRetries), so that a failing region cannot make clients
// multiply the load on the others; an endpoint that failed on the transport is
// tried last for DownFor, so that calls after the first few go straight to a
// healthy region without spending retries. Streaming calls are never retried.
package client
