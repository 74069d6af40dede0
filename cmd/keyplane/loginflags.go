package main

import (
	"flag"

	"github.com/keyplane/keyplane/region"
	"github.com/keyplane/keyplane/schema"
)

// loginFlags registers serve's flags for logins under attack: throttling, the bound on
// password hashing, step-up and the rate limits. They fill c, defaults shown.
func loginFlags(fs *flag.FlagSet, c *region.LoginConfig) {
	c.Throttle = schema.DefaultThrottle()
	c.Rates = region.DefaultRateLimits()
	fs.Int64Var(&c.Throttle.SourceFree, "login-free-attempts", c.Throttle.SourceFree,
		"failed logins one source address may make on one login name before each further try waits (a delay that doubles, see --login-delay)")
	fs.DurationVar(&c.Throttle.SourceDelay, "login-delay", c.Throttle.SourceDelay,
		"first wait imposed on a source address past --login-free-attempts; it doubles with every further attempt")
	fs.DurationVar(&c.Throttle.SourceMaxDelay, "login-max-delay", c.Throttle.SourceMaxDelay, "longest wait imposed on one source address")
	fs.Int64Var(&c.Throttle.LockAfter, "login-lock-after", c.Throttle.LockAfter,
		"failed logins on one login name, from all addresses together, that lock it for everyone for --login-lock-for")
	fs.DurationVar(&c.Throttle.LockFor, "login-lock-for", c.Throttle.LockFor, "how long a login name stays locked after --login-lock-after failures")
	fs.DurationVar(&c.Throttle.Window, "login-window", c.Throttle.Window, "time without attempts after which a login's failure counts start again")
	fs.IntVar(&c.HashConcurrency, "password-hash-concurrency", 0,
		"password hashes (argon2id, ~19 MiB each) the node runs at once (0: an eighth of the memory limit — cgroup, GOMEMLIMIT or RAM — over 24 MiB, 1 to 16)")
	fs.DurationVar(&c.HashWait, "password-hash-wait", region.DefaultHashWait,
		"how long a login waits for a password hashing slot before it is refused with resource_exhausted and Retry-After")
	fs.DurationVar(&c.StepUpWindow, "step-up-window", region.DefaultStepUpWindow,
		"how recent a login must be to enrol TOTP (and, with a second factor, for a human's sensitive admin calls), for tenants that set no step_up_window of their own")
	rate := func(r *region.RateLimit, name, what string) {
		fs.Var(r, name, what+` limit: RATE per second or RATE:BURST, or "off"`)
	}
	rate(&c.Rates.LoginPerIP, "login-rate-per-ip", "per source address Login")
	rate(&c.Rates.LoginPerTenant, "login-rate-per-tenant", "per tenant Login")
	rate(&c.Rates.TokenPerIP, "token-rate-per-ip", "per source address token minting (the OAuth token endpoint, ExchangeAPIKey, Refresh)")
	rate(&c.Rates.TokenPerTenant, "token-rate-per-tenant", "default per tenant token issuance (tokens minted by the OAuth token endpoint, ExchangeAPIKey and Refresh; once spent, those and the sign-in pages are refused), for tenants without a tokens limit of their own (SetTenantLimits);")
	rate(&c.Rates.IntrospectPerIP, "introspect-rate-per-ip", "per source address OAuth introspection")
	rate(&c.Rates.IntrospectPerTenant, "introspect-rate-per-tenant", "per tenant OAuth introspection")
	rate(&c.Rates.DecisionsPerTenant, "decision-rate-per-tenant", "default per tenant decisions (ValidateToken, CheckService, introspection, userinfo), for tenants without a decisions limit of their own (SetTenantLimits);")
	rate(&c.Rates.WritesPerTenant, "write-rate-per-tenant", "default per tenant writes (Admin API and SCIM mutations), for tenants without a writes limit of their own (SetTenantLimits);")
}
