-- keyplane schema, postgres dialect

CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INT8 NOT NULL PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- migration 0001 initial
-- 0001 initial schema, one source for both dialects (rendered by schema/migrate.go):
--   global  LOCALITY GLOBAL on CockroachDB; nothing on PostgreSQL
--   rbr     LOCALITY REGIONAL BY ROW AS crdb_region on CockroachDB; nothing on PostgreSQL
--   pk      the primary key. CockroachDB prefixes it with the partition column
--           crdb_region itself; on PostgreSQL crdb_region is written out first, so
--           both engines store the same key and per-region list partitions fit.
-- Per-tenant primary keys start with tenant_id. Foreign keys and unique indexes between
-- per-tenant rows include crdb_region, so on CockroachDB their checks stay in the home
-- region (no cross-region uniqueness probes) and rehoming cascades.

-- On CockroachDB crdb_internal_region is the enum of the database's regions.
CREATE DOMAIN crdb_internal_region AS TEXT;

-- regions: the regions this database serves, written by `keyplane migrate --regions`.
CREATE TABLE IF NOT EXISTS regions (
    name         TEXT NOT NULL PRIMARY KEY,
    super_region TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT regions_name_format CHECK (name ~ '^[a-z][a-z0-9-]{0,62}$')
);

-- tenants: read in every region, written rarely.
CREATE TABLE IF NOT EXISTS tenants (
    id              TEXT NOT NULL PRIMARY KEY,
    name            TEXT NOT NULL,
    home_region     TEXT NOT NULL REFERENCES regions (name),
    residency       TEXT NOT NULL DEFAULT 'region',
    status          TEXT NOT NULL DEFAULT 'active',
    policy_revision INT8 NOT NULL DEFAULT 1,
    placement_epoch INT8 NOT NULL DEFAULT 1,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT tenants_id_format CHECK (id ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    CONSTRAINT tenants_name_length CHECK (length(name) BETWEEN 1 AND 200),
    CONSTRAINT tenants_residency CHECK (residency IN ('region', 'super_region')),
    CONSTRAINT tenants_status CHECK (status IN ('active', 'disabled'))
);

CREATE TABLE IF NOT EXISTS identities (
    tenant_id          TEXT NOT NULL REFERENCES tenants (id),
    id                 UUID NOT NULL DEFAULT gen_random_uuid(),
    crdb_region        crdb_internal_region NOT NULL,
    kind               TEXT NOT NULL,
    display_name       TEXT NOT NULL,
    email              TEXT,
    attributes         JSONB NOT NULL DEFAULT '{}',
    owner_id           UUID,
    purpose            TEXT NOT NULL DEFAULT '',
    status             TEXT NOT NULL DEFAULT 'active',
    expires_at         TIMESTAMPTZ,
    tokens_valid_after TIMESTAMPTZ,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (crdb_region, tenant_id, id),
    CONSTRAINT identities_owner FOREIGN KEY (crdb_region, tenant_id, owner_id) REFERENCES identities (crdb_region, tenant_id, id) ON UPDATE CASCADE,
    CONSTRAINT identities_kind CHECK (kind IN ('human', 'service_account', 'workload', 'device', 'agent')),
    CONSTRAINT identities_status CHECK (status IN ('active', 'disabled')),
    CONSTRAINT identities_display_name_length CHECK (length(display_name) BETWEEN 1 AND 200),
    CONSTRAINT identities_nonhuman_governed CHECK (kind = 'human' OR (owner_id IS NOT NULL AND expires_at IS NOT NULL))
);
CREATE UNIQUE INDEX IF NOT EXISTS identities_email ON identities (crdb_region, tenant_id, lower(email)) WHERE email IS NOT NULL;
CREATE INDEX IF NOT EXISTS identities_owner_idx ON identities (tenant_id, owner_id) WHERE owner_id IS NOT NULL;

-- credentials: secrets are stored only as hashes (or, for TOTP seeds, encrypted).
CREATE TABLE IF NOT EXISTS credentials (
    tenant_id        TEXT NOT NULL REFERENCES tenants (id),
    id               UUID NOT NULL DEFAULT gen_random_uuid(),
    crdb_region      crdb_internal_region NOT NULL,
    identity_id      UUID NOT NULL,
    kind             TEXT NOT NULL,
    key_id           TEXT,
    secret_hash      BYTEA,
    secret_encrypted BYTEA,
    params           JSONB NOT NULL DEFAULT '{}',
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at       TIMESTAMPTZ,
    last_used_at     TIMESTAMPTZ,
    rotated_at       TIMESTAMPTZ,
    revoked_at       TIMESTAMPTZ,
    PRIMARY KEY (crdb_region, tenant_id, id),
    CONSTRAINT credentials_identity FOREIGN KEY (crdb_region, tenant_id, identity_id) REFERENCES identities (crdb_region, tenant_id, id) ON UPDATE CASCADE,
    CONSTRAINT credentials_kind CHECK (kind IN ('password', 'totp', 'recovery_code', 'api_key', 'client_secret'))
);
CREATE UNIQUE INDEX IF NOT EXISTS credentials_key_id ON credentials (crdb_region, tenant_id, key_id) WHERE key_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS credentials_identity_idx ON credentials (tenant_id, identity_id);

-- sessions: every token carries its session id, so revoking a session revokes them all.
CREATE TABLE IF NOT EXISTS sessions (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    id          UUID NOT NULL DEFAULT gen_random_uuid(),
    crdb_region crdb_internal_region NOT NULL,
    identity_id UUID NOT NULL,
    client_id   TEXT,
    amr         TEXT[] NOT NULL DEFAULT '{}',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL,
    revoked_at  TIMESTAMPTZ,
    PRIMARY KEY (crdb_region, tenant_id, id),
    CONSTRAINT sessions_identity FOREIGN KEY (crdb_region, tenant_id, identity_id) REFERENCES identities (crdb_region, tenant_id, id) ON UPDATE CASCADE
);
CREATE INDEX IF NOT EXISTS sessions_identity_idx ON sessions (tenant_id, identity_id);

CREATE TABLE IF NOT EXISTS roles (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    id          UUID NOT NULL DEFAULT gen_random_uuid(),
    crdb_region crdb_internal_region NOT NULL,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    permissions TEXT[] NOT NULL DEFAULT '{}',
    sensitive   BOOL NOT NULL DEFAULT false,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (crdb_region, tenant_id, id)
);
CREATE UNIQUE INDEX IF NOT EXISTS roles_name ON roles (crdb_region, tenant_id, name);

CREATE TABLE IF NOT EXISTS groups (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    id          UUID NOT NULL DEFAULT gen_random_uuid(),
    crdb_region crdb_internal_region NOT NULL,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    external_id TEXT,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (crdb_region, tenant_id, id)
);
CREATE UNIQUE INDEX IF NOT EXISTS groups_name ON groups (crdb_region, tenant_id, name);

CREATE TABLE IF NOT EXISTS group_members (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    group_id    UUID NOT NULL,
    identity_id UUID NOT NULL,
    crdb_region crdb_internal_region NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (crdb_region, tenant_id, group_id, identity_id),
    CONSTRAINT group_members_group FOREIGN KEY (crdb_region, tenant_id, group_id) REFERENCES groups (crdb_region, tenant_id, id) ON UPDATE CASCADE,
    CONSTRAINT group_members_identity FOREIGN KEY (crdb_region, tenant_id, identity_id) REFERENCES identities (crdb_region, tenant_id, id) ON UPDATE CASCADE
);
CREATE INDEX IF NOT EXISTS group_members_identity_idx ON group_members (tenant_id, identity_id);

-- bindings: a role granted (or denied) to a principal on a resource scope.
CREATE TABLE IF NOT EXISTS bindings (
    tenant_id      TEXT NOT NULL REFERENCES tenants (id),
    id             UUID NOT NULL DEFAULT gen_random_uuid(),
    crdb_region    crdb_internal_region NOT NULL,
    effect         TEXT NOT NULL DEFAULT 'allow',
    principal_kind TEXT NOT NULL,
    principal_id   UUID NOT NULL,
    role_id        UUID NOT NULL,
    scope          TEXT NOT NULL,
    condition      TEXT NOT NULL DEFAULT '',
    expires_at     TIMESTAMPTZ,
    granted_by     TEXT NOT NULL,
    justification  TEXT NOT NULL DEFAULT '',
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (crdb_region, tenant_id, id),
    CONSTRAINT bindings_role FOREIGN KEY (crdb_region, tenant_id, role_id) REFERENCES roles (crdb_region, tenant_id, id) ON UPDATE CASCADE,
    CONSTRAINT bindings_effect CHECK (effect IN ('allow', 'deny')),
    CONSTRAINT bindings_principal_kind CHECK (principal_kind IN ('identity', 'group'))
);
CREATE INDEX IF NOT EXISTS bindings_principal_idx ON bindings (tenant_id, principal_id);

-- audit_events: written in the same transaction as the change each one records.
CREATE TABLE IF NOT EXISTS audit_events (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    id          UUID NOT NULL DEFAULT gen_random_uuid(),
    crdb_region crdb_internal_region NOT NULL,
    at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target_kind TEXT NOT NULL,
    target_id   TEXT NOT NULL,
    before      JSONB,
    after       JSONB,
    request_id  TEXT NOT NULL DEFAULT '',
    region      TEXT NOT NULL,
    node        TEXT NOT NULL,
    PRIMARY KEY (crdb_region, tenant_id, id)
);
CREATE INDEX IF NOT EXISTS audit_events_at_idx ON audit_events (tenant_id, at DESC, id DESC);

-- signing_keys: public halves, read in every region to verify tokens. A region signs
-- with its newest key whose active_at has passed; a key is published (JWKS) from
-- created_at, before it signs, until expires_at, after every token it signed expired.
CREATE TABLE IF NOT EXISTS signing_keys (
    kid        TEXT NOT NULL PRIMARY KEY,
    region     TEXT NOT NULL REFERENCES regions (name),
    alg        TEXT NOT NULL DEFAULT 'EdDSA',
    public_key BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    active_at  TIMESTAMPTZ NOT NULL,
    retired_at TIMESTAMPTZ,
    expires_at TIMESTAMPTZ
);

-- signing_key_secrets: private halves, encrypted under the key-encryption key, stored
-- only in the region whose nodes sign with them.
CREATE TABLE IF NOT EXISTS signing_key_secrets (
    kid         TEXT NOT NULL REFERENCES signing_keys (kid),
    crdb_region crdb_internal_region NOT NULL,
    sealed      BYTEA NOT NULL,
    kek_id      TEXT NOT NULL,
    PRIMARY KEY (crdb_region, kid)
);

-- migration 0002 auth
-- 0002 authentication: tenant token policy, credential state, refresh tokens.

ALTER TABLE tenants ADD COLUMN IF NOT EXISTS access_token_ttl_seconds INT8 NOT NULL DEFAULT 900;
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS api_key_max_lifetime_seconds INT8 NOT NULL DEFAULT 31536000;

-- credentials: name labels API keys and clients; failed_attempts and locked_until throttle
-- password guessing; last_step refuses a replayed TOTP code; confirmed_at marks a TOTP
-- enrollment that was proven with a first code.
ALTER TABLE credentials ADD COLUMN IF NOT EXISTS name TEXT NOT NULL DEFAULT '';
ALTER TABLE credentials ADD COLUMN IF NOT EXISTS failed_attempts INT8 NOT NULL DEFAULT 0;
ALTER TABLE credentials ADD COLUMN IF NOT EXISTS locked_until TIMESTAMPTZ;
ALTER TABLE credentials ADD COLUMN IF NOT EXISTS last_step INT8 NOT NULL DEFAULT 0;
ALTER TABLE credentials ADD COLUMN IF NOT EXISTS confirmed_at TIMESTAMPTZ;

-- sessions: how the session was authenticated, and when.
ALTER TABLE sessions ADD COLUMN IF NOT EXISTS grant_type TEXT NOT NULL DEFAULT '';
ALTER TABLE sessions ADD COLUMN IF NOT EXISTS credential_id UUID;
ALTER TABLE sessions ADD COLUMN IF NOT EXISTS auth_time TIMESTAMPTZ NOT NULL DEFAULT now();

-- refresh_tokens: opaque, rotating. Each belongs to a session (its family); presenting
-- a token that was already rotated revokes the session and so every token of it.
CREATE TABLE IF NOT EXISTS refresh_tokens (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    id          TEXT NOT NULL,
    crdb_region crdb_internal_region NOT NULL,
    session_id  UUID NOT NULL,
    secret_hash BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL,
    used_at     TIMESTAMPTZ,
    PRIMARY KEY (crdb_region, tenant_id, id),
    CONSTRAINT refresh_tokens_session FOREIGN KEY (crdb_region, tenant_id, session_id) REFERENCES sessions (crdb_region, tenant_id, id) ON UPDATE CASCADE
);
CREATE INDEX IF NOT EXISTS refresh_tokens_session_idx ON refresh_tokens (tenant_id, session_id);

-- migration 0003 policy
-- 0003 permissions: just-in-time elevations and the decision log.

-- elevations: a request for a temporary role binding, approved by another identity.
CREATE TABLE IF NOT EXISTS elevations (
    tenant_id     TEXT NOT NULL REFERENCES tenants (id),
    id            UUID NOT NULL DEFAULT gen_random_uuid(),
    crdb_region   crdb_internal_region NOT NULL,
    requester_id  UUID NOT NULL,
    role_id       UUID NOT NULL,
    scope         TEXT NOT NULL,
    duration_s    INT8 NOT NULL,
    justification TEXT NOT NULL,
    status        TEXT NOT NULL DEFAULT 'pending',
    approver_id   UUID,
    binding_id    UUID,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    decided_at    TIMESTAMPTZ,
    ends_at       TIMESTAMPTZ,
    PRIMARY KEY (crdb_region, tenant_id, id),
    CONSTRAINT elevations_requester FOREIGN KEY (crdb_region, tenant_id, requester_id) REFERENCES identities (crdb_region, tenant_id, id) ON UPDATE CASCADE,
    CONSTRAINT elevations_role FOREIGN KEY (crdb_region, tenant_id, role_id) REFERENCES roles (crdb_region, tenant_id, id) ON UPDATE CASCADE,
    CONSTRAINT elevations_status CHECK (status IN ('pending', 'active', 'denied', 'ended'))
);

-- decisions: every permission decision, written in batches by the node's decision log.
CREATE TABLE IF NOT EXISTS decisions (
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    id           UUID NOT NULL,
    crdb_region  crdb_internal_region NOT NULL,
    at           TIMESTAMPTZ NOT NULL,
    principal_id TEXT NOT NULL,
    permission   TEXT NOT NULL,
    resource     TEXT NOT NULL,
    allowed      BOOL NOT NULL,
    reason       TEXT NOT NULL,
    binding_ids  TEXT[] NOT NULL DEFAULT '{}',
    revision     INT8 NOT NULL,
    region       TEXT NOT NULL,
    node         TEXT NOT NULL,
    latency_us   INT8 NOT NULL,
    PRIMARY KEY (crdb_region, tenant_id, id)
);
CREATE INDEX IF NOT EXISTS decisions_at_idx ON decisions (tenant_id, at DESC);

-- migration 0004 login_throttle
-- 0004 login throttling. subject is the SHA-256 (hex) of a login's lower-cased email,
-- so unknown and known emails are throttled alike and sprayed addresses are not stored
-- in clear. Two tables, so that one statement can take an attempt slot in both (a
-- statement may upsert a CockroachDB table only once). Idle rows are pruned.

-- login_throttle: failures of a login name across every source, and its hard lock.
CREATE TABLE IF NOT EXISTS login_throttle (
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    crdb_region  crdb_internal_region NOT NULL,
    subject      TEXT NOT NULL,
    failures     INT8 NOT NULL DEFAULT 0,
    locked_until TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (crdb_region, tenant_id, subject)
);
CREATE INDEX IF NOT EXISTS login_throttle_updated_idx ON login_throttle (tenant_id, updated_at);

-- login_throttle_sources: failures of a login name from one source address, and the
-- progressive delay before that source may try again.
CREATE TABLE IF NOT EXISTS login_throttle_sources (
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    crdb_region  crdb_internal_region NOT NULL,
    subject      TEXT NOT NULL,
    source       TEXT NOT NULL,
    failures     INT8 NOT NULL DEFAULT 0,
    next_at      TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (crdb_region, tenant_id, subject, source)
);
CREATE INDEX IF NOT EXISTS login_throttle_sources_updated_idx ON login_throttle_sources (tenant_id, updated_at);

-- migration 0005 oauth
-- 0005 OAuth hardening: per-client audience and scope allow-lists, per-tenant signing
-- algorithm.

-- credentials: the audiences (RFC 8707 resources) and scopes an OAuth client may ask
-- the token endpoint for. Empty lists mean only the tenant's own issuer as audience and
-- no scope (deny by default, docs/decisions/0008). Every secret of a client carries the
-- same lists: rotation copies them, updates change them all.
ALTER TABLE credentials ADD COLUMN IF NOT EXISTS allowed_audiences TEXT[] NOT NULL DEFAULT '{}';
ALTER TABLE credentials ADD COLUMN IF NOT EXISTS allowed_scopes TEXT[] NOT NULL DEFAULT '{}';

-- tenants: the JWS algorithm the tenant's access tokens are signed with. Each region
-- keeps one current signing key per algorithm (signing_keys.alg).
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS signing_alg TEXT NOT NULL DEFAULT 'EdDSA'
    CONSTRAINT tenants_signing_alg CHECK (signing_alg IN ('EdDSA', 'RS256'));

-- migration 0006 audit_actor
-- 0006 Named accountability: every audit event says who acted, how and through what.

-- audit_events: the actor's kind (operator, an identity kind, client, system), the
-- session and access token (jti) it authenticated with, the OAuth client or API key
-- id it acted through, and whether it was the operator's break-glass use of a
-- tenant-scoped call. Empty for events written before this migration.
ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS actor_kind TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS session_id TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS token_id TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS client_id TEXT NOT NULL DEFAULT '';
ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS break_glass BOOL NOT NULL DEFAULT false;

-- migration 0007 step_up
-- 0007 Step-up: a tenant's step-up window.

-- tenants: how recent a login with a second factor a sensitive call needs
-- (docs/administration.md). 0: the node's default (serve --step-up-window, 10 minutes).
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS step_up_window_seconds INT8 NOT NULL DEFAULT 0;

-- migration 0008 change_control
-- 0008 Two-person change control: privileged roles and change requests.

-- roles: a privileged role is bound only through a change request another identity
-- approves (docs/administration.md, "Two-person change control"). Not the same as
-- sensitive (decisions logged synchronously).
ALTER TABLE roles ADD COLUMN IF NOT EXISTS privileged BOOL NOT NULL DEFAULT false;

-- change_requests: a change a tenant identity asked for that waits for a second
-- identity's approval. change is the exact change as JSON (the binding to create, the
-- id and summary of the binding to delete, or the group and the identity to add or remove).
-- A pending request past expires_at is read as expired; decided_by is the approver's
-- (or denier's) audit actor.
CREATE TABLE IF NOT EXISTS change_requests (
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    id           UUID NOT NULL DEFAULT gen_random_uuid(),
    crdb_region  crdb_internal_region NOT NULL,
    kind         TEXT NOT NULL,
    change       JSONB NOT NULL,
    requester_id UUID NOT NULL,
    requested_by TEXT NOT NULL,
    status       TEXT NOT NULL DEFAULT 'pending',
    created_at   TIMESTAMPTZ NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL,
    decided_by   TEXT NOT NULL DEFAULT '',
    decided_at   TIMESTAMPTZ,
    PRIMARY KEY (crdb_region, tenant_id, id),
    CONSTRAINT change_requests_requester FOREIGN KEY (crdb_region, tenant_id, requester_id) REFERENCES identities (crdb_region, tenant_id, id) ON UPDATE CASCADE,
    CONSTRAINT change_requests_kind CHECK (kind IN ('binding.create', 'binding.delete', 'group.add_member', 'group.remove_member')),
    CONSTRAINT change_requests_status CHECK (status IN ('pending', 'approved', 'denied'))
);
CREATE INDEX IF NOT EXISTS change_requests_created_idx ON change_requests (tenant_id, created_at, id);

-- migration 0009 decision_log
-- 0009 The decision log's read API and retention (docs/decisions/0011-decision-log-retention.md).

-- tenants: how long the decision log keeps a decision (default 90 days; 1 day to 10
-- years). Reads hide older decisions; each node's pruner deletes them.
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS decision_retention_seconds INT8 NOT NULL DEFAULT 7776000;

-- decisions.trace: the engine's explain trace, one line per candidate binding; written
-- for denied decisions and for checks that asked for explain, empty otherwise.
ALTER TABLE decisions ADD COLUMN IF NOT EXISTS trace TEXT[] NOT NULL DEFAULT '{}';

-- Every index below is written by every decision, so there are only the ones the
-- questions people ask need (ListDecisions pages newest first by (at, id)):
--   decisions_time_idx: the tenant's log by time (the unfiltered listing, time ranges,
--     filters on permission or outcome alone, and the pruner's oldest-first deletes);
--     it replaces decisions_at_idx, which lacked the id tie-break.
--   decisions_principal_idx: "what was this identity allowed and denied".
--   decisions_resource_idx: "who touched this resource" (exact resource; on
--     CockroachDB also resource prefixes, which are byte ranges of it).
-- Permission and outcome are filtered on top of these: they are not selective alone.
CREATE INDEX IF NOT EXISTS decisions_time_idx ON decisions (tenant_id, at DESC, id DESC);
DROP INDEX IF EXISTS decisions_at_idx;
CREATE INDEX IF NOT EXISTS decisions_principal_idx ON decisions (tenant_id, principal_id, at DESC, id DESC);
CREATE INDEX IF NOT EXISTS decisions_resource_idx ON decisions (tenant_id, resource, at DESC, id DESC);

-- migration 0010 role_delete
-- 0010 Deleting roles (issue 14): an elevation's role_id no longer references roles.
-- DeleteRole with cascade ends a role's active elevations and denies its pending ones;
-- the decided elevations stay as history (with the audit log) after the role is gone,
-- which the foreign key forbade. RequestElevation checks the role exists instead, in
-- the transaction that inserts the elevation.
ALTER TABLE elevations DROP CONSTRAINT IF EXISTS elevations_role;

-- migration 0011 offboarding
-- 0011 Offboarding and erasure (issue 15): the leaver's manager, frozen non-human
-- identities, and when an identity was offboarded and erased.

-- identities.manager_id: the human an identity reports to (SCIM's enterprise extension
-- "manager"); offboarding hands the NHIs a leaver owns to their manager.
ALTER TABLE identities ADD COLUMN IF NOT EXISTS manager_id UUID;
ALTER TABLE identities DROP CONSTRAINT IF EXISTS identities_manager;
ALTER TABLE identities ADD CONSTRAINT identities_manager FOREIGN KEY (crdb_region, tenant_id, manager_id) REFERENCES identities (crdb_region, tenant_id, id) ON UPDATE CASCADE;

-- offboarded_at: set by OffboardIdentity, cleared when the identity is enabled again
-- (a rehire); EraseIdentity needs it. erased_at: personal data removed, for good.
ALTER TABLE identities ADD COLUMN IF NOT EXISTS offboarded_at TIMESTAMPTZ;
ALTER TABLE identities ADD COLUMN IF NOT EXISTS erased_at TIMESTAMPTZ;

-- status 'frozen': a non-human identity whose owner was offboarded with no manager to
-- take it over. Nothing authenticates as it, nothing new is granted to it, until
-- UpdateIdentity gives it an owner.
ALTER TABLE identities DROP CONSTRAINT IF EXISTS identities_status;
ALTER TABLE identities ADD CONSTRAINT identities_status CHECK (status IN ('active', 'disabled', 'frozen'));

-- migration 0012 scim
-- 0012 SCIM 2.0 provisioning (docs/lifecycle.md, "SCIM provisioning").

-- identities: a human provisioned through SCIM has a user_name (SCIM userName, unique
-- per tenant without regard to case) and may have an external_id (the provisioning
-- client's id for it, unique per tenant). scim holds the rest of the SCIM payload a
-- client sent (name parts, emails, phone numbers, addresses, the enterprise extension):
-- personal data, kept in one column so that erasure removes it in one place.
-- scim_deleted_at marks a User the client DELETEd: the row stays for audit, SCIM no
-- longer sees it, and its userName and externalId are free again for a rehire.
ALTER TABLE identities ADD COLUMN IF NOT EXISTS user_name TEXT;
ALTER TABLE identities ADD COLUMN IF NOT EXISTS external_id TEXT;
ALTER TABLE identities ADD COLUMN IF NOT EXISTS scim JSONB;
ALTER TABLE identities ADD COLUMN IF NOT EXISTS scim_deleted_at TIMESTAMPTZ;
CREATE UNIQUE INDEX IF NOT EXISTS identities_user_name ON identities (crdb_region, tenant_id, lower(user_name))
    WHERE user_name IS NOT NULL AND scim_deleted_at IS NULL;
CREATE UNIQUE INDEX IF NOT EXISTS identities_external_id ON identities (crdb_region, tenant_id, external_id)
    WHERE external_id IS NOT NULL AND scim_deleted_at IS NULL;

-- groups: scim_managed marks the groups a SCIM client created; only those are SCIM
-- Groups (a client cannot see or change the groups administrators made). Their
-- external_id is unique per tenant when set (only theirs: groups made before may share one).
ALTER TABLE groups ADD COLUMN IF NOT EXISTS scim_managed BOOL NOT NULL DEFAULT false;
CREATE UNIQUE INDEX IF NOT EXISTS groups_external_id ON groups (crdb_region, tenant_id, external_id) WHERE external_id IS NOT NULL AND scim_managed;

-- migration 0013 membership_rules
-- 0013 Birthright rules: group memberships that follow identity attributes
-- (docs/lifecycle.md, "Joiners and movers").

-- group_members: where a membership came from. 'manual': added by hand (AddGroupMember,
-- an approved change request) and kept until removed by hand. 'rule': added by a
-- membership rule and removed as soon as no rule gives it any more, so a mover
-- accumulates nothing.
ALTER TABLE group_members ADD COLUMN IF NOT EXISTS source TEXT NOT NULL DEFAULT 'manual' CHECK (source IN ('manual', 'rule'));

-- membership_rules: identities for which condition (CEL over the identity) holds are
-- members of the rule's groups (membership_rule_groups).
CREATE TABLE IF NOT EXISTS membership_rules (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    id          UUID NOT NULL DEFAULT gen_random_uuid(),
    crdb_region crdb_internal_region NOT NULL,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    condition   TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (crdb_region, tenant_id, id),
    CONSTRAINT membership_rules_name_length CHECK (length(name) BETWEEN 1 AND 200)
);
CREATE UNIQUE INDEX IF NOT EXISTS membership_rules_name ON membership_rules (crdb_region, tenant_id, name);

-- membership_rule_groups: the groups a rule gives. The foreign key to groups keeps a
-- group a rule names from being deleted under it.
CREATE TABLE IF NOT EXISTS membership_rule_groups (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    rule_id     UUID NOT NULL,
    group_id    UUID NOT NULL,
    crdb_region crdb_internal_region NOT NULL,
    PRIMARY KEY (crdb_region, tenant_id, rule_id, group_id),
    CONSTRAINT membership_rule_groups_rule FOREIGN KEY (crdb_region, tenant_id, rule_id) REFERENCES membership_rules (crdb_region, tenant_id, id) ON UPDATE CASCADE ON DELETE CASCADE,
    CONSTRAINT membership_rule_groups_group FOREIGN KEY (crdb_region, tenant_id, group_id) REFERENCES groups (crdb_region, tenant_id, id) ON UPDATE CASCADE
);
CREATE INDEX IF NOT EXISTS membership_rule_groups_group_idx ON membership_rule_groups (tenant_id, group_id);

-- migration 0014 federation
-- 0014 Workload identity federation (docs/federation.md): a workload presents a token
-- from an external OIDC issuer it trusts and gets a keyplane access token for a
-- non-human identity, with no static secret anywhere.

-- federation_policies: trust policies. A token from issuer, for one of audiences,
-- signed with one of algorithms, younger than max_age_seconds (iat) and for whose
-- claims condition (CEL) holds, is exchanged for a token of identity_id, which is
-- federated (no API key or client secret) for as long as a policy maps to it.
CREATE TABLE IF NOT EXISTS federation_policies (
    tenant_id         TEXT NOT NULL REFERENCES tenants (id),
    id                UUID NOT NULL DEFAULT gen_random_uuid(),
    crdb_region       crdb_internal_region NOT NULL,
    name              TEXT NOT NULL,
    description       TEXT NOT NULL DEFAULT '',
    issuer            TEXT NOT NULL,
    audiences         TEXT[] NOT NULL,
    algorithms        TEXT[] NOT NULL,
    condition         TEXT NOT NULL,
    max_age_seconds   BIGINT NOT NULL,
    identity_id       UUID NOT NULL,
    allowed_audiences TEXT[] NOT NULL DEFAULT '{}',
    allowed_scopes    TEXT[] NOT NULL DEFAULT '{}',
    allow_missing_jti BOOL NOT NULL DEFAULT false,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (crdb_region, tenant_id, id),
    CONSTRAINT federation_policies_identity FOREIGN KEY (crdb_region, tenant_id, identity_id) REFERENCES identities (crdb_region, tenant_id, id) ON UPDATE CASCADE,
    CONSTRAINT federation_policies_name_length CHECK (length(name) BETWEEN 1 AND 200),
    CONSTRAINT federation_policies_max_age CHECK (max_age_seconds > 0)
);
CREATE UNIQUE INDEX IF NOT EXISTS federation_policies_name ON federation_policies (crdb_region, tenant_id, name);
CREATE INDEX IF NOT EXISTS federation_policies_issuer_idx ON federation_policies (tenant_id, issuer);
CREATE INDEX IF NOT EXISTS federation_policies_identity_idx ON federation_policies (tenant_id, identity_id);

-- federation_jtis: the external tokens already exchanged, (issuer, jti), kept until
-- the token's own expiry so that a replay is refused; pruned after.
CREATE TABLE IF NOT EXISTS federation_jtis (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    crdb_region crdb_internal_region NOT NULL,
    issuer      TEXT NOT NULL,
    jti         TEXT NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (crdb_region, tenant_id, issuer, jti)
);
CREATE INDEX IF NOT EXISTS federation_jtis_expiry_idx ON federation_jtis (tenant_id, expires_at);

-- migration 0015 openid_provider
-- 0015 keyplane as OpenID Provider (docs/openid-provider.md): OAuth clients' redirect
-- URIs, browser sessions, authorization codes and remembered consent.

-- credentials: an OAuth client's registered redirect URIs (exact match at the
-- authorization endpoint), the URIs it may name after logout, and whether it is a
-- first-party application (its users are not asked for consent). Like the allow-lists,
-- every secret of a client carries the same values: rotation copies them, updates
-- change them all.
ALTER TABLE credentials ADD COLUMN IF NOT EXISTS redirect_uris TEXT[] NOT NULL DEFAULT '{}';
ALTER TABLE credentials ADD COLUMN IF NOT EXISTS post_logout_redirect_uris TEXT[] NOT NULL DEFAULT '{}';
ALTER TABLE credentials ADD COLUMN IF NOT EXISTS first_party BOOL NOT NULL DEFAULT false;

-- browser_sessions: the secret of a browser's session cookie (kpb_<id>_<secret>, only
-- its hash), pointing at the keyplane session its login opened. Revoking the session
-- (logout, a reused authorization code) ends the browser session with it.
CREATE TABLE IF NOT EXISTS browser_sessions (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    id          TEXT NOT NULL,
    crdb_region crdb_internal_region NOT NULL,
    session_id  UUID NOT NULL,
    secret_hash BYTEA NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (crdb_region, tenant_id, id),
    CONSTRAINT browser_sessions_session FOREIGN KEY (crdb_region, tenant_id, session_id) REFERENCES sessions (crdb_region, tenant_id, id) ON UPDATE CASCADE
);
CREATE INDEX IF NOT EXISTS browser_sessions_session_idx ON browser_sessions (tenant_id, session_id);

-- authorization_codes: single use, short-lived, stored hashed (kpa_<id>_<secret>),
-- bound to the client, redirect URI, PKCE challenge (S256), nonce, scope and the
-- session whose tokens the code yields. used_at is set by the first redemption; a
-- second one revokes the session.
CREATE TABLE IF NOT EXISTS authorization_codes (
    tenant_id      TEXT NOT NULL REFERENCES tenants (id),
    id             TEXT NOT NULL,
    crdb_region    crdb_internal_region NOT NULL,
    session_id     UUID NOT NULL,
    secret_hash    BYTEA NOT NULL,
    client_id      TEXT NOT NULL,
    redirect_uri   TEXT NOT NULL,
    code_challenge TEXT NOT NULL,
    nonce          TEXT NOT NULL DEFAULT '',
    scope          TEXT NOT NULL DEFAULT '',
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at     TIMESTAMPTZ NOT NULL,
    used_at        TIMESTAMPTZ,
    PRIMARY KEY (crdb_region, tenant_id, id),
    CONSTRAINT authorization_codes_session FOREIGN KEY (crdb_region, tenant_id, session_id) REFERENCES sessions (crdb_region, tenant_id, id) ON UPDATE CASCADE
);
CREATE INDEX IF NOT EXISTS authorization_codes_session_idx ON authorization_codes (tenant_id, session_id);

-- oauth_consents: a person's consent to a (third-party) client for a set of scopes
-- (sorted, space-separated); a later request for the same or fewer scopes skips the
-- consent page.
CREATE TABLE IF NOT EXISTS oauth_consents (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    identity_id UUID NOT NULL,
    client_id   TEXT NOT NULL,
    crdb_region crdb_internal_region NOT NULL,
    scope       TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (crdb_region, tenant_id, identity_id, client_id, scope),
    CONSTRAINT oauth_consents_identity FOREIGN KEY (crdb_region, tenant_id, identity_id) REFERENCES identities (crdb_region, tenant_id, id) ON UPDATE CASCADE ON DELETE CASCADE
);

-- migration 0016 upstream_oidc
-- 0016 upstream OIDC sign-in (docs/openid-provider.md "Upstream OIDC sign-in"): a
-- tenant's external OpenID Providers its people may sign in with, and the pending
-- sign-ins (state) waiting for the provider's answer.

-- upstream_oidc_providers: name is the provider's slug in the sign-in URLs. The client
-- secret is sealed under the node's KEK (associated data: tenant and provider id); it
-- is never shown again. claim_* name the upstream ID token claims that give the
-- identity's email, display name and the externalId a SCIM-provisioned identity is
-- linked by; attribute_claims maps identity attribute keys to claim names.
CREATE TABLE IF NOT EXISTS upstream_oidc_providers (
    tenant_id         TEXT NOT NULL REFERENCES tenants (id),
    id                UUID NOT NULL DEFAULT gen_random_uuid(),
    crdb_region       crdb_internal_region NOT NULL,
    name              TEXT NOT NULL,
    display_name      TEXT NOT NULL,
    issuer            TEXT NOT NULL,
    client_id         TEXT NOT NULL,
    client_secret     BYTEA NOT NULL,
    scopes            TEXT[] NOT NULL,
    claim_email       TEXT NOT NULL,
    claim_name        TEXT NOT NULL,
    claim_external_id TEXT NOT NULL,
    attribute_claims  JSONB NOT NULL DEFAULT '{}',
    jit               BOOL NOT NULL DEFAULT false,
    link_by_email     BOOL NOT NULL DEFAULT false,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (crdb_region, tenant_id, id)
);
CREATE UNIQUE INDEX IF NOT EXISTS upstream_oidc_providers_name ON upstream_oidc_providers (crdb_region, tenant_id, name);

-- upstream_oidc_states: a sign-in sent to a provider, keyed by the SHA-256 of its
-- state (the browser holds the state in a cookie too). The callback deletes the row
-- it uses, so a state is good once.
CREATE TABLE IF NOT EXISTS upstream_oidc_states (
    tenant_id     TEXT NOT NULL REFERENCES tenants (id),
    id            TEXT NOT NULL,
    crdb_region   crdb_internal_region NOT NULL,
    provider_id   UUID NOT NULL,
    nonce         TEXT NOT NULL,
    code_verifier TEXT NOT NULL,
    request       TEXT NOT NULL,
    expires_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (crdb_region, tenant_id, id)
);

-- upstream_oidc_links: which keyplane identity an upstream subject (of one provider)
-- signs in as, written at its first sign-in (linked by externalId or email, or
-- created just in time), so later sign-ins need no claim to match again.
CREATE TABLE IF NOT EXISTS upstream_oidc_links (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    provider_id UUID NOT NULL,
    subject     TEXT NOT NULL,
    crdb_region crdb_internal_region NOT NULL,
    identity_id UUID NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (crdb_region, tenant_id, provider_id, subject),
    CONSTRAINT upstream_oidc_links_identity FOREIGN KEY (crdb_region, tenant_id, identity_id) REFERENCES identities (crdb_region, tenant_id, id) ON UPDATE CASCADE ON DELETE CASCADE
);

-- migration 0017 saml
-- 0017 SAML 2.0 sign-in (docs/saml.md): a tenant delegates its people's sign-in to a
-- SAML identity provider; keyplane is the service provider.

-- saml_idps: a tenant's SAML identity providers. metadata is the IdP's metadata XML
-- (validated when stored); sp_key_sealed is keyplane's SP private key for this IdP,
-- sealed with the node's KEK (associated data: tenant and IdP id), sp_cert its
-- self-signed certificate (DER). The mapping says which SAML attribute ('' for the
-- NameID) gives the email, the external id and the display name.
CREATE TABLE IF NOT EXISTS saml_idps (
    tenant_id         TEXT NOT NULL REFERENCES tenants (id),
    id                UUID NOT NULL,
    crdb_region       crdb_internal_region NOT NULL,
    name              TEXT NOT NULL,
    idp_entity_id     TEXT NOT NULL,
    metadata          TEXT NOT NULL,
    sp_cert           BYTEA NOT NULL,
    sp_key_sealed     BYTEA NOT NULL,
    email_attribute   TEXT NOT NULL DEFAULT '',
    external_id_attribute TEXT NOT NULL DEFAULT '',
    name_attribute    TEXT NOT NULL DEFAULT '',
    jit               BOOL NOT NULL DEFAULT false,
    link_by           TEXT NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (crdb_region, tenant_id, id),
    CONSTRAINT saml_idps_name_length CHECK (length(name) BETWEEN 1 AND 100),
    CONSTRAINT saml_idps_link_by CHECK (link_by IN ('email', 'external_id'))
);
CREATE UNIQUE INDEX IF NOT EXISTS saml_idps_name ON saml_idps (crdb_region, tenant_id, name);

-- saml_assertions: the assertions already accepted, kept until they expire so that a
-- replayed one is refused; pruned after.
CREATE TABLE IF NOT EXISTS saml_assertions (
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    crdb_region  crdb_internal_region NOT NULL,
    idp_id       UUID NOT NULL,
    assertion_id TEXT NOT NULL,
    expires_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (crdb_region, tenant_id, idp_id, assertion_id)
);
CREATE INDEX IF NOT EXISTS saml_assertions_expiry_idx ON saml_assertions (tenant_id, expires_at);

-- migration 0018 governance
-- 0018 NHI governance (issue 17, docs/governance.md): the sweeper's lease, the tenant
-- governance policy, and the rotation-due notice mark on credentials.

-- leases: one row per (region partition, tenant, name): who may do a job alone until
-- expires_at. tenant is '' for a region-wide lease (the governance sweeper holds
-- "governance.sweep" per home region). Only the database's clock (now()) is compared
-- with expires_at: a node's clock never decides who holds a lease
-- (docs/decisions/0013-sweeper-lease.md). Not a per-tenant table: a tenant's lease in
-- a region it left expires unused, so rehoming leaves it.
CREATE TABLE IF NOT EXISTS leases (
    crdb_region crdb_internal_region NOT NULL,
    tenant      TEXT NOT NULL DEFAULT '',
    name        TEXT NOT NULL,
    holder      TEXT NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL,
    renewed_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (crdb_region, tenant, name),
    CONSTRAINT leases_name_length CHECK (length(name) BETWEEN 1 AND 100),
    CONSTRAINT leases_holder_length CHECK (length(holder) BETWEEN 1 AND 200)
);

-- governance_policies: a tenant's governance thresholds; a tenant without a row has
-- the defaults (schema.DefaultGovernancePolicy, the column defaults below).
CREATE TABLE IF NOT EXISTS governance_policies (
    tenant_id                    TEXT NOT NULL REFERENCES tenants (id),
    crdb_region                  crdb_internal_region NOT NULL,
    expiring_days                INT8 NOT NULL DEFAULT 14,
    unused_days                  INT8 NOT NULL DEFAULT 30,
    rotation_days_high           INT8 NOT NULL DEFAULT 30,
    rotation_days_normal         INT8 NOT NULL DEFAULT 90,
    rotation_notice_days         INT8 NOT NULL DEFAULT 7,
    least_privilege_days         INT8 NOT NULL DEFAULT 90,
    min_least_privilege_percent  INT8 NOT NULL DEFAULT 50,
    updated_at                   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (crdb_region, tenant_id)
);

-- credentials.rotation_notice_for: the rotation deadline the sweeper last emitted a
-- credential.rotation_due event for, so each deadline is announced once.
ALTER TABLE credentials ADD COLUMN IF NOT EXISTS rotation_notice_for TIMESTAMPTZ;

-- The sweeper's scans: identities past their expiry, credentials past theirs.
CREATE INDEX IF NOT EXISTS identities_expiry_idx ON identities (tenant_id, expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS credentials_expiry_idx ON credentials (tenant_id, expires_at) WHERE expires_at IS NOT NULL AND revoked_at IS NULL;

-- migration 0019 access_reviews
-- 0019 Access review campaigns (docs/access-reviews.md).

-- review_campaigns: a campaign over a scope (nhis, role, group or tenant; scope_id
-- names the role or group). default_action is what undecided items of non-sensitive
-- access get at the deadline (sensitive access is always revoked). created_by is the
-- audit actor who created it; creator_id the identity, NULL for the operator.
CREATE TABLE IF NOT EXISTS review_campaigns (
    tenant_id          TEXT NOT NULL REFERENCES tenants (id),
    id                 UUID NOT NULL DEFAULT gen_random_uuid(),
    crdb_region        crdb_internal_region NOT NULL,
    name               TEXT NOT NULL,
    scope_kind         TEXT NOT NULL,
    scope_id           TEXT NOT NULL DEFAULT '',
    deadline           TIMESTAMPTZ NOT NULL,
    reminder_seconds   INT8 NOT NULL,
    default_action     TEXT NOT NULL,
    unused_days        INT8 NOT NULL DEFAULT 90,
    sign_in_client_id  TEXT NOT NULL DEFAULT '',
    status             TEXT NOT NULL DEFAULT 'open',
    created_by         TEXT NOT NULL,
    creator_id         UUID,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    closed_at          TIMESTAMPTZ,
    PRIMARY KEY (crdb_region, tenant_id, id),
    CONSTRAINT review_campaigns_name_length CHECK (length(name) BETWEEN 1 AND 200),
    CONSTRAINT review_campaigns_scope_kind CHECK (scope_kind IN ('nhis', 'role', 'group', 'tenant')),
    CONSTRAINT review_campaigns_default_action CHECK (default_action IN ('keep', 'revoke')),
    CONSTRAINT review_campaigns_status CHECK (status IN ('open', 'closed')),
    CONSTRAINT review_campaigns_reminder CHECK (reminder_seconds >= 3600)
);
-- The nodes' loop looks for open campaigns (reminders, deadlines).
CREATE INDEX IF NOT EXISTS review_campaigns_open_idx ON review_campaigns (tenant_id, deadline) WHERE status = 'open';

-- review_items: one access under review, snapshotted at the campaign's creation: a
-- binding the subject holds directly (kind binding, binding_id) or the subject's
-- membership of a group (kind membership, group_id), with the roles and scopes it
-- grants, whether any is sensitive, and its last use from the decision log.
-- reviewer_id is NULL when no one but the subject could review it (the operator or
-- the deadline decides). decision is NULL until decided; defaulted marks the
-- deadline's default action; applied says what the decision did.
CREATE TABLE IF NOT EXISTS review_items (
    tenant_id        TEXT NOT NULL REFERENCES tenants (id),
    campaign_id      UUID NOT NULL,
    id               UUID NOT NULL DEFAULT gen_random_uuid(),
    crdb_region      crdb_internal_region NOT NULL,
    kind             TEXT NOT NULL,
    subject_id       UUID NOT NULL,
    subject_name     TEXT NOT NULL,
    subject_kind     TEXT NOT NULL,
    binding_id       UUID,
    group_id         UUID,
    group_name       TEXT NOT NULL DEFAULT '',
    role_ids         TEXT[] NOT NULL DEFAULT '{}',
    role_names       TEXT[] NOT NULL DEFAULT '{}',
    scopes           TEXT[] NOT NULL DEFAULT '{}',
    binding_ids      TEXT[] NOT NULL DEFAULT '{}',
    sensitive        BOOL NOT NULL DEFAULT false,
    reviewer_id      UUID,
    reviewer_name    TEXT NOT NULL DEFAULT '',
    last_used_at     TIMESTAMPTZ,
    decision         TEXT,
    justification    TEXT NOT NULL DEFAULT '',
    decided_by       TEXT NOT NULL DEFAULT '',
    decided_at       TIMESTAMPTZ,
    defaulted        BOOL NOT NULL DEFAULT false,
    applied          TEXT NOT NULL DEFAULT '',
    new_role_id      TEXT NOT NULL DEFAULT '',
    new_scope        TEXT NOT NULL DEFAULT '',
    last_reminded_at TIMESTAMPTZ,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (crdb_region, tenant_id, campaign_id, id),
    CONSTRAINT review_items_campaign FOREIGN KEY (crdb_region, tenant_id, campaign_id) REFERENCES review_campaigns (crdb_region, tenant_id, id) ON UPDATE CASCADE ON DELETE CASCADE,
    CONSTRAINT review_items_kind CHECK (kind IN ('binding', 'membership')),
    CONSTRAINT review_items_decision CHECK (decision IS NULL OR decision IN ('keep', 'revoke', 'modify'))
);
CREATE UNIQUE INDEX IF NOT EXISTS review_items_id ON review_items (crdb_region, tenant_id, id);
CREATE INDEX IF NOT EXISTS review_items_reviewer_idx ON review_items (tenant_id, reviewer_id, created_at);

-- migration 0020 analytics
-- 0020 Identity analytics (docs/analytics.md): per-identity baselines of access,
-- anomaly alerts delivered to webhooks through an outbox, and policy drift digests.

-- decisions: where a decision's request came from, for the baselines and for people
-- reading the log: the caller's network (/24 IPv4, /48 IPv6; '' when unknown, never
-- the full address), the OAuth client or API key the checked token was issued to, the
-- region the request entered keyplane in, and the checked token's session.
ALTER TABLE decisions ADD COLUMN IF NOT EXISTS source_network TEXT NOT NULL DEFAULT '';
ALTER TABLE decisions ADD COLUMN IF NOT EXISTS client_id TEXT NOT NULL DEFAULT '';
ALTER TABLE decisions ADD COLUMN IF NOT EXISTS entry_region TEXT NOT NULL DEFAULT '';
ALTER TABLE decisions ADD COLUMN IF NOT EXISTS session_id TEXT NOT NULL DEFAULT '';

-- analytics_features: an identity's baseline, one row per feature value seen (kind:
-- events (value ''), region, network, hour, client, permission, resource, denies
-- (value '')), with how often and when first and last. Written by each node's
-- analytics flusher in batches; bounded per identity and kind by the flusher.
CREATE TABLE IF NOT EXISTS analytics_features (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    crdb_region crdb_internal_region NOT NULL,
    identity_id TEXT NOT NULL,
    kind        TEXT NOT NULL,
    value       TEXT NOT NULL,
    count       INT8 NOT NULL,
    first_seen  TIMESTAMPTZ NOT NULL,
    last_seen   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (crdb_region, tenant_id, identity_id, kind, value)
);

-- analytics_alerts: the alerts raised, newest first by (at, id).
CREATE TABLE IF NOT EXISTS analytics_alerts (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    id          UUID NOT NULL,
    crdb_region crdb_internal_region NOT NULL,
    at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    identity_id TEXT NOT NULL,
    kind        TEXT NOT NULL,
    value       TEXT NOT NULL,
    reason      TEXT NOT NULL,
    region      TEXT NOT NULL,
    node        TEXT NOT NULL,
    PRIMARY KEY (crdb_region, tenant_id, id)
);
CREATE INDEX IF NOT EXISTS analytics_alerts_time_idx ON analytics_alerts (tenant_id, at DESC, id DESC);

-- analytics_alert_keys: when an (identity, kind, value) last raised an alert; a repeat
-- within the suppression window raises none (the database's clock decides).
CREATE TABLE IF NOT EXISTS analytics_alert_keys (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    crdb_region crdb_internal_region NOT NULL,
    identity_id TEXT NOT NULL,
    kind        TEXT NOT NULL,
    value       TEXT NOT NULL,
    last_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (crdb_region, tenant_id, identity_id, kind, value)
);

-- analytics_sessions: the last region and time each session was used in, for
-- impossible travel; pruned a day after.
CREATE TABLE IF NOT EXISTS analytics_sessions (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    crdb_region crdb_internal_region NOT NULL,
    session_id  TEXT NOT NULL,
    region      TEXT NOT NULL,
    at          TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (crdb_region, tenant_id, session_id)
);

-- analytics_webhooks: where alerts are delivered. secret_sealed is the HMAC signing
-- secret sealed with the node's KEK (associated data: tenant and webhook id).
CREATE TABLE IF NOT EXISTS analytics_webhooks (
    tenant_id     TEXT NOT NULL REFERENCES tenants (id),
    id            UUID NOT NULL,
    crdb_region   crdb_internal_region NOT NULL,
    url           TEXT NOT NULL,
    description   TEXT NOT NULL DEFAULT '',
    secret_sealed BYTEA NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (crdb_region, tenant_id, id)
);

-- analytics_deliveries: the outbox, one row per alert per webhook, written with the
-- alert. A node claims a due row with a conditional UPDATE (state pending, or a
-- sending claim that expired) before sending, so two nodes never both send it.
CREATE TABLE IF NOT EXISTS analytics_deliveries (
    tenant_id     TEXT NOT NULL REFERENCES tenants (id),
    crdb_region   crdb_internal_region NOT NULL,
    alert_id      UUID NOT NULL,
    webhook_id    UUID NOT NULL,
    state         TEXT NOT NULL DEFAULT 'pending',
    attempts      INT4 NOT NULL DEFAULT 0,
    next_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    claimed_until TIMESTAMPTZ,
    claimed_by    TEXT NOT NULL DEFAULT '',
    last_error    TEXT NOT NULL DEFAULT '',
    delivered_at  TIMESTAMPTZ,
    PRIMARY KEY (crdb_region, tenant_id, alert_id, webhook_id),
    CONSTRAINT analytics_deliveries_state CHECK (state IN ('pending', 'sending', 'delivered', 'failed'))
);
CREATE INDEX IF NOT EXISTS analytics_deliveries_due_idx ON analytics_deliveries (tenant_id, state, next_at);

-- analytics_drift: each node's digest of a tenant's decision sample re-evaluated at a
-- policy revision; two digests of one (revision, sample) that differ are drift.
CREATE TABLE IF NOT EXISTS analytics_drift (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    crdb_region crdb_internal_region NOT NULL,
    revision    INT8 NOT NULL,
    sample_id   TEXT NOT NULL,
    node        TEXT NOT NULL,
    region      TEXT NOT NULL,
    digest      TEXT NOT NULL,
    at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (crdb_region, tenant_id, revision, sample_id, node)
);

-- migration 0022 governance_snapshots
-- 0022 Governance figures over time (docs/governance.md, "Governance figures"): one
-- snapshot of a tenant's figures per UTC day, written by the node that computes them
-- first that day, so `keyplane governance report` can chart trends (orphaned
-- accounts, least privilege, MFA coverage, …) without a separate metrics store.
CREATE TABLE IF NOT EXISTS governance_snapshots (
    tenant_id   TEXT NOT NULL REFERENCES tenants (id),
    day         DATE NOT NULL,
    crdb_region crdb_internal_region NOT NULL,
    at          TIMESTAMPTZ NOT NULL,
    figures     JSONB NOT NULL,
    PRIMARY KEY (crdb_region, tenant_id, day)
);

-- migration 0023 idempotency_keys
-- 0023 Idempotency keys (docs/routing.md, "Retries and idempotency keys"): a
-- non-idempotent call sent with an Idempotency-Key header is recorded here, with its
-- response sealed by the KEK, in the same transaction as the change it made. A retry
-- with the same key gets the recorded response instead of making the change again;
-- the same key with another request is refused. Rows live 24 hours.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    tenant_id    TEXT NOT NULL REFERENCES tenants (id),
    key          TEXT NOT NULL,
    crdb_region  crdb_internal_region NOT NULL,
    request_hash BYTEA NOT NULL,
    status       INT NOT NULL,
    response     BYTEA NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (crdb_region, tenant_id, key)
);
CREATE INDEX IF NOT EXISTS idempotency_keys_expiry ON idempotency_keys (crdb_region, tenant_id, expires_at);

-- migration 0024 residency_policy
-- 0024 Residency policy (docs/residency.md, "Residency-strict tenants"): strict means a
-- node outside the tenant's allowed regions (its home region, or with super_region
-- residency the home region's super region) never serves the tenant's requests, not
-- even degraded while the home region is unreachable. Tenants with super_region
-- residency are strict unless made relaxed; region residency defaults to relaxed.
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS residency_policy TEXT NOT NULL DEFAULT 'relaxed'
    CONSTRAINT tenants_residency_policy CHECK (residency_policy IN ('strict', 'relaxed'));
UPDATE tenants SET residency_policy = 'strict' WHERE residency = 'super_region';

-- migration 0025 tenant_limits
-- 0025 Per-tenant request-rate limits (docs/decisions/0017-tenant-limits.md): a token
-- bucket per tenant per node for each class of request (decisions, token issuance,
-- writes). A rate of 0 means the node's default (serve --decision-rate-per-tenant,
-- --token-rate-per-tenant, --write-rate-per-tenant), a negative rate no limit; a burst
-- of 0 means twice the rate. Set with AdminService.SetTenantLimits, audited as
-- tenant.limits in the same transaction.
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS decision_rate FLOAT8 NOT NULL DEFAULT 0;
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS decision_burst INT8 NOT NULL DEFAULT 0;
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS token_rate FLOAT8 NOT NULL DEFAULT 0;
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS token_burst INT8 NOT NULL DEFAULT 0;
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS write_rate FLOAT8 NOT NULL DEFAULT 0;
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS write_burst INT8 NOT NULL DEFAULT 0;

-- migration 0027 batched_rehome
-- 0027 Batched rehome (docs/decisions/0019-batched-rehome.md): a large tenant moves
-- in batches of rows, each its own short transaction, behind a fence.
-- rehome_to: the region the tenant is being moved to; while set, the tenant is fenced:
--   changes are refused (the audit guard) and nodes answer `unavailable`.
-- rehome_runner / rehome_lease_until: the run that moves the rows holds a lease, so a
--   second run of the same rehome is refused until the first stops or its lease ends.
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS rehome_to TEXT;
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS rehome_started_at TIMESTAMPTZ;
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS rehome_runner TEXT;
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS rehome_lease_until TIMESTAMPTZ;

-- rehome_held: rows of tables with two parents (group_members, …) and manager links,
-- taken out before their parents move and put back after, batch by batch; a crash
-- leaves them here and the next run puts them back. They live in the region the tenant
-- is moving to (crdb_region), which its residency allows. The column is "tenant", not
-- tenant_id: these are not rows of the tenant's home partition, and rehoming does not
-- move them.
CREATE TABLE IF NOT EXISTS rehome_held (
    tenant      TEXT NOT NULL REFERENCES tenants (id),
    table_name  TEXT NOT NULL,
    id          UUID NOT NULL DEFAULT gen_random_uuid(),
    crdb_region crdb_internal_region NOT NULL,
    row_data    JSONB NOT NULL,
    PRIMARY KEY (crdb_region, tenant, table_name, id)
);

-- Moving an identity cascades to the identities it manages (ON UPDATE CASCADE): without
-- an index on the link each moved identity scanned the tenant's identities, which made
-- the move of a tenant quadratic in its identities.
CREATE INDEX IF NOT EXISTS identities_manager_idx ON identities (crdb_region, tenant_id, manager_id) WHERE manager_id IS NOT NULL;
