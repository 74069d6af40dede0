package region

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Page tokens leave keyplane sealed to the listing that made them. A listing's store
// token is only a position (a time and an id), so a token from another tenant or
// another listing, or an edited one, would silently page through something else. The
// pageTokens interceptor wraps every next_page_token a response carries in an HMAC
// over the procedure, the request's tenant_id, the request's other fields (its
// filters) and the position, and unwraps every page_token a request carries, refusing
// one whose MAC does not match with invalid_argument on field page_token. Every node of
// a cluster derives the same key from the operator secret, so a page may be fetched
// from any node.
//
//	token = base64url(0x01 || HMAC-SHA256(key, binding) || position)

const pageTokenVersion = 1

// pageKey derives the page-token key from the operator secret every node shares; a node
// without one gets a random key (its tokens work only on itself).
func pageKey(operatorSecret string) []byte {
	if operatorSecret == "" {
		return []byte(rand.Text())
	}
	mac := hmac.New(sha256.New, []byte(operatorSecret))
	mac.Write([]byte("keyplane page token key v1"))
	return mac.Sum(nil)
}

// pageField finds a message's page_token (requests) or next_page_token (responses)
// string field.
func pageField(m protoreflect.Message, name protoreflect.Name) protoreflect.FieldDescriptor {
	f := m.Descriptor().Fields().ByName(name)
	if f == nil || f.Kind() != protoreflect.StringKind || f.Cardinality() == protoreflect.Repeated {
		return nil
	}
	return f
}

// pageBinding is what a token is sealed to: the procedure, the tenant and every field
// of the request but the page token and the page size (so filters cannot change
// between pages, while the page size may).
func pageBinding(procedure string, req protoreflect.Message) ([]byte, error) {
	c := proto.Clone(req.Interface()).ProtoReflect()
	for _, name := range []protoreflect.Name{"page_token", "page_size"} {
		if f := c.Descriptor().Fields().ByName(name); f != nil {
			c.Clear(f)
		}
	}
	fields, err := proto.MarshalOptions{Deterministic: true}.Marshal(c.Interface())
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	h.Write([]byte(procedure))
	h.Write([]byte{0})
	h.Write(fields)
	return h.Sum(nil), nil
}

func sealPageToken(key, binding []byte, position string) string {
	mac := hmac.New(sha256.New, key)
	mac.Write(binding)
	mac.Write([]byte(position))
	out := append([]byte{pageTokenVersion}, mac.Sum(nil)...)
	return base64.RawURLEncoding.EncodeToString(append(out, position...))
}

func openPageToken(key, binding []byte, token string) (string, error) {
	refused := fieldError("page_token", "not a token returned by this listing for this tenant and these filters")
	if len(token) > 1024 {
		return "", refused
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(token)
	if err != nil || len(b) < 1+sha256.Size || b[0] != pageTokenVersion {
		return "", refused
	}
	got, position := b[1:1+sha256.Size], b[1+sha256.Size:]
	mac := hmac.New(sha256.New, key)
	mac.Write(binding)
	mac.Write(position)
	if !hmac.Equal(got, mac.Sum(nil)) {
		return "", refused
	}
	return string(position), nil
}

// pageTokens is the interceptor described above. It runs inside observe and before
// authorityCheck, so a refused token is logged and costs no database read.
func (n *Node) pageTokens() connect.UnaryInterceptorFunc {
	return func(next connect.UnaryFunc) connect.UnaryFunc {
		return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
			msg, ok := req.Any().(proto.Message)
			if !ok {
				return next(ctx, req)
			}
			m := msg.ProtoReflect()
			in := pageField(m, "page_token")
			if in == nil {
				return next(ctx, req)
			}
			binding, err := pageBinding(req.Spec().Procedure, m)
			if err != nil {
				return nil, fieldError("page_token", "request cannot be paged: "+err.Error())
			}
			if tok := m.Get(in).String(); tok != "" {
				position, err := openPageToken(n.pageKey, binding, tok)
				if err != nil {
					return nil, err
				}
				m.Set(in, protoreflect.ValueOfString(position))
			}
			resp, err := next(ctx, req)
			if err != nil {
				return resp, err
			}
			if out, ok := resp.Any().(proto.Message); ok {
				r := out.ProtoReflect()
				if f := pageField(r, "next_page_token"); f != nil && r.Get(f).String() != "" {
					r.Set(f, protoreflect.ValueOfString(sealPageToken(n.pageKey, binding, r.Get(f).String())))
				}
			}
			return resp, nil
		}
	}
}
