package peers

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	v1 "github.com/authzed/authzed-go/proto/authzed/api/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keyplane/keyplane/bench"
)

// spiceDB is a running SpiceDB server with the schema and the shape's relationships
// written, checked over gRPC (authzed-go's generated v1 clients), one connection per
// worker. check is safe for concurrent use.
type spiceDB struct {
	srv   *server
	conns []*grpc.ClientConn
	perms []v1.PermissionsServiceClient // perms[w] uses conns[w]
}

// spiceSchema mirrors the OpenFGA model.
const spiceSchema = `definition user {}

definition group {
	relation member: user
}

definition resource {
	relation viewer: group#member
	permission view = viewer
}`

// startSpiceDB migrates dbURL to head, starts `spicedb serve` on a free port of
// 127.0.0.1 with a random preshared key, and waits until it accepts the schema.
func startSpiceDB(ctx context.Context, bin, dbURL, logDir string, conc int) (*spiceDB, error) {
	key := make([]byte, 16)
	_, _ = rand.Read(key)
	env := []string{"SPICEDB_DATASTORE_ENGINE=postgres", "SPICEDB_DATASTORE_CONN_URI=" + dbURL,
		"SPICEDB_GRPC_PRESHARED_KEY=" + hex.EncodeToString(key)}
	if err := runOnce(ctx, "spicedb datastore migrate head", bin, []string{"datastore", "migrate", "head", "--log-level", "warn"}, env); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	srv, err := startServer(SpiceDB, bin, logDir, []string{"serve", "--grpc-addr", hostPort(port),
		"--http-enabled=false", "--metrics-enabled=false", "--telemetry-endpoint=", "--log-level", "warn"}, env)
	if err != nil {
		return nil, err
	}
	s := &spiceDB{srv: srv}
	for range max(conc, 1) {
		c, err := grpc.NewClient(hostPort(port), grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithPerRPCCredentials(bearer(hex.EncodeToString(key))))
		if err != nil {
			s.stop()
			return nil, err
		}
		s.conns = append(s.conns, c)
		s.perms = append(s.perms, v1.NewPermissionsServiceClient(c))
	}
	schema := v1.NewSchemaServiceClient(s.conns[0])
	if err := srv.waitReady(ctx, 60*time.Second, func(ctx context.Context) error {
		_, err := schema.WriteSchema(ctx, &v1.WriteSchemaRequest{Schema: spiceSchema})
		return err
	}); err != nil {
		s.stop()
		return nil, err
	}
	return s, nil
}

// load writes the relationships, 1,000 per request (SpiceDB's default limit), 8
// writers.
func (s *spiceDB) load(ctx context.Context, tuples []Tuple) error {
	const batch = 1000
	return bench.Parallel(ctx, (len(tuples)+batch-1)/batch, 8, func(ctx context.Context, k int) error {
		var ups []*v1.RelationshipUpdate
		for _, t := range tuples[k*batch : min(len(tuples), (k+1)*batch)] {
			rel, err := relationship(t)
			if err != nil {
				return err
			}
			ups = append(ups, &v1.RelationshipUpdate{Operation: v1.RelationshipUpdate_OPERATION_TOUCH, Relationship: rel})
		}
		if _, err := s.perms[k%len(s.perms)].WriteRelationships(ctx, &v1.WriteRelationshipsRequest{Updates: ups}); err != nil {
			return fmt.Errorf("write relationships: %w", err)
		}
		return nil
	})
}

// relationship turns "user:1 member group:2" or "group:2#member viewer resource:3"
// into a SpiceDB relationship.
func relationship(t Tuple) (*v1.Relationship, error) {
	subj, subRel, _ := strings.Cut(t.Subject, "#")
	st, sid, ok1 := strings.Cut(subj, ":")
	ot, oid, ok2 := strings.Cut(t.Object, ":")
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("tuple %v: want type:id", t)
	}
	return &v1.Relationship{Resource: &v1.ObjectReference{ObjectType: ot, ObjectId: oid}, Relation: t.Relation,
		Subject: &v1.SubjectReference{Object: &v1.ObjectReference{ObjectType: st, ObjectId: sid}, OptionalRelation: subRel}}, nil
}

// check asks whether user i has view on resource r, fully consistent (read at the
// datastore's head revision; no cache).
func (s *spiceDB) check(ctx context.Context, w, i, r int) (bool, error) {
	resp, err := s.perms[w%len(s.perms)].CheckPermission(ctx, &v1.CheckPermissionRequest{
		Consistency: &v1.Consistency{Requirement: &v1.Consistency_FullyConsistent{FullyConsistent: true}},
		Resource:    &v1.ObjectReference{ObjectType: typeResource, ObjectId: fmt.Sprint(r)},
		Permission:  "view",
		Subject:     &v1.SubjectReference{Object: &v1.ObjectReference{ObjectType: typeUser, ObjectId: fmt.Sprint(i)}}})
	if err != nil {
		return false, err
	}
	switch resp.Permissionship {
	case v1.CheckPermissionResponse_PERMISSIONSHIP_HAS_PERMISSION:
		return true, nil
	case v1.CheckPermissionResponse_PERMISSIONSHIP_NO_PERMISSION:
		return false, nil
	}
	return false, errors.New("spicedb: permissionship " + resp.Permissionship.String())
}

func (s *spiceDB) pid() int { return s.srv.Pid() }

func (s *spiceDB) stop() {
	for _, c := range s.conns {
		_ = c.Close()
	}
	s.srv.Stop()
}

// bearer sends the preshared key on a plaintext loopback connection.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

func (bearer) RequireTransportSecurity() bool { return false }
