package region

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	keyplanev1 "github.com/keyplane/keyplane/region/gen/keyplane/v1"
	"github.com/keyplane/keyplane/region/gen/keyplane/v1/keyplanev1connect"
	"github.com/keyplane/keyplane/schema"
)

// SAMLService implements keyplane.v1.SAMLService: the tenant's SAML identity
// providers (docs/saml.md). The authority interceptor has checked
// iam.federation.read or .write (and step-up for writes).
type SAMLService struct {
	node *Node
}

var _ keyplanev1connect.SAMLServiceHandler = (*SAMLService)(nil)

const samlMetadataFetchTimeout = 10 * time.Second

func (s *SAMLService) scope(ctx context.Context, tenantID string) (schema.Scope, error) {
	return (&AdminService{node: s.node}).scope(ctx, tenantID)
}

// fetchMetadata fetches an IdP's metadata once: https (http only on a loopback host),
// no redirects, at most 256 KiB.
func fetchMetadata(ctx context.Context, raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" || u.User != nil || len(raw) > 2048 {
		return "", fieldError("idp.metadata_url", "must be an absolute https URL")
	}
	if u.Scheme != "https" && !(u.Scheme == "http" && schema.LoopbackHost(u.Hostname())) {
		return "", fieldError("idp.metadata_url", "must be https (http only on a loopback host)")
	}
	ctx, cancel := context.WithTimeout(ctx, samlMetadataFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", fieldError("idp.metadata_url", "must be an absolute https URL")
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		return "", connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("idp.metadata_url: fetch failed: %s", truncateString(err.Error(), 300)))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("idp.metadata_url: the server answered %s", resp.Status))
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 256<<10+1))
	if err != nil {
		return "", connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("idp.metadata_url: read failed: %s", truncateString(err.Error(), 300)))
	}
	if len(b) > 256<<10 {
		return "", fieldError("idp.metadata_url", "the metadata is larger than 256 KiB")
	}
	return string(b), nil
}

func (s *SAMLService) CreateSAMLIdP(ctx context.Context, req *connect.Request[keyplanev1.CreateSAMLIdPRequest]) (*connect.Response[keyplanev1.CreateSAMLIdPResponse], error) {
	m := req.Msg.Idp
	if m == nil {
		return nil, fieldError("idp", "required")
	}
	sc, err := s.scope(ctx, req.Msg.TenantId)
	if err != nil {
		return nil, err
	}
	if err := s.node.mayConfigureSignIn(ctx, callerOf(ctx), req.Msg.TenantId); err != nil {
		return nil, err
	}
	metadata := m.Metadata
	switch {
	case metadata != "" && m.MetadataUrl != "":
		return nil, fieldError("idp.metadata", "give metadata or metadata_url, not both")
	case metadata == "" && m.MetadataUrl == "":
		return nil, fieldError("idp.metadata", "required (or metadata_url)")
	case metadata == "":
		if metadata, err = fetchMetadata(ctx, m.MetadataUrl); err != nil {
			return nil, err
		}
	}
	ed, err := parseIdPMetadata(metadata)
	if err != nil {
		return nil, fieldError("idp.metadata", err.Error())
	}
	linkBy := m.LinkBy
	if linkBy == "" {
		linkBy = schema.SAMLLinkEmail
	}
	p := schema.SAMLIdP{ID: uuid.NewString(), Name: m.Name, IdPEntityID: ed.EntityID, Metadata: metadata,
		EmailAttribute: m.EmailAttribute, ExternalIDAttribute: m.ExternalIdAttribute, NameAttribute: m.NameAttribute, JIT: m.Jit, LinkBy: linkBy}
	if p.Name == "" {
		return nil, fieldError("idp.name", "required")
	}
	if p.SPCert, p.SPKeySealed, err = s.node.newSAMLKeyPair(req.Msg.TenantId, p.ID, s.node.samlBase(req.Msg.TenantId, p.Name)+"metadata"); err != nil {
		return nil, err
	}
	out, err := s.node.store.CreateSAMLIdP(ctx, change(ctx), sc, p)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.CreateSAMLIdPResponse{Idp: s.toProto(req.Msg.TenantId, out)}), nil
}

func (s *SAMLService) GetSAMLIdP(ctx context.Context, req *connect.Request[keyplanev1.GetSAMLIdPRequest]) (*connect.Response[keyplanev1.GetSAMLIdPResponse], error) {
	sc, err := s.scope(ctx, req.Msg.TenantId)
	if err != nil {
		return nil, err
	}
	p, err := s.node.store.GetSAMLIdP(ctx, sc, req.Msg.Id)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.GetSAMLIdPResponse{Idp: s.toProto(req.Msg.TenantId, p)}), nil
}

func (s *SAMLService) ListSAMLIdPs(ctx context.Context, req *connect.Request[keyplanev1.ListSAMLIdPsRequest]) (*connect.Response[keyplanev1.ListSAMLIdPsResponse], error) {
	sc, err := s.scope(ctx, req.Msg.TenantId)
	if err != nil {
		return nil, err
	}
	ps, err := s.node.store.ListSAMLIdPs(ctx, sc)
	if err != nil {
		return nil, err
	}
	out := &keyplanev1.ListSAMLIdPsResponse{}
	for _, p := range ps {
		out.Idps = append(out.Idps, s.toProto(req.Msg.TenantId, p))
	}
	return connect.NewResponse(out), nil
}

func (s *SAMLService) DeleteSAMLIdP(ctx context.Context, req *connect.Request[keyplanev1.DeleteSAMLIdPRequest]) (*connect.Response[keyplanev1.DeleteSAMLIdPResponse], error) {
	sc, err := s.scope(ctx, req.Msg.TenantId)
	if err != nil {
		return nil, err
	}
	if err := s.node.store.DeleteSAMLIdP(ctx, change(ctx), sc, req.Msg.Id); err != nil {
		if errors.Is(err, schema.ErrNotFound) {
			return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("id: no SAML IdP %s", req.Msg.Id))
		}
		return nil, err
	}
	return connect.NewResponse(&keyplanev1.DeleteSAMLIdPResponse{}), nil
}

func (s *SAMLService) toProto(tenantID string, p schema.SAMLIdP) *keyplanev1.SAMLIdP {
	base := s.node.samlBase(tenantID, p.Name)
	return &keyplanev1.SAMLIdP{Id: p.ID, Name: p.Name, Metadata: p.Metadata, IdpEntityId: p.IdPEntityID,
		EmailAttribute: p.EmailAttribute, ExternalIdAttribute: p.ExternalIDAttribute, NameAttribute: p.NameAttribute,
		Jit: p.JIT, LinkBy: p.LinkBy, SpEntityId: base + "metadata", AcsUrl: base + "acs", LoginUrl: base + "login",
		SpCertificate: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.SPCert})), CreateTime: timestamppb.New(p.CreatedAt)}
}
