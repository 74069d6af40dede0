package peers

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/keyplane/keyplane/bench"
)

// openFGA is a running OpenFGA server with the model and the shape's tuples written,
// checked through its HTTP API. check is safe for concurrent use.
type openFGA struct {
	srv          *server
	base         string
	hc           *http.Client
	store, model string
}

// fgaModel is the authorization model (schema 1.1) as the HTTP API takes it:
//
//	type user
//	type group
//	  relations
//	    define member: [user]
//	type resource
//	  relations
//	    define viewer: [group#member]
//	    define can_view: viewer
const fgaModel = `{"schema_version":"1.1","type_definitions":[
{"type":"user"},
{"type":"group","relations":{"member":{"this":{}}},
 "metadata":{"relations":{"member":{"directly_related_user_types":[{"type":"user"}]}}}},
{"type":"resource","relations":{"viewer":{"this":{}},"can_view":{"computedUserset":{"relation":"viewer"}}},
 "metadata":{"relations":{"viewer":{"directly_related_user_types":[{"type":"group","relation":"member"}]},"can_view":{"directly_related_user_types":[]}}}}]}`

// startOpenFGA migrates dbURL, starts `openfga run` on free ports of 127.0.0.1, and
// waits until it serves.
func startOpenFGA(ctx context.Context, bin, dbURL, logDir string) (*openFGA, error) {
	env := []string{"OPENFGA_DATASTORE_ENGINE=postgres", "OPENFGA_DATASTORE_URI=" + dbURL}
	if err := runOnce(ctx, "openfga migrate", bin, []string{"migrate"}, env); err != nil {
		return nil, err
	}
	httpPort, err := freePort()
	if err != nil {
		return nil, err
	}
	grpcPort, err := freePort()
	if err != nil {
		return nil, err
	}
	srv, err := startServer(OpenFGA, bin, logDir, []string{"run",
		"--http-addr", hostPort(httpPort), "--grpc-addr", hostPort(grpcPort),
		"--playground-enabled=false", "--metrics-enabled=false", "--log-level", "warn"}, env)
	if err != nil {
		return nil, err
	}
	f := &openFGA{srv: srv, base: "http://" + hostPort(httpPort), hc: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}}
	if err := srv.waitReady(ctx, 60*time.Second, func(ctx context.Context) error {
		var h struct{ Status string }
		if err := f.call(ctx, http.MethodGet, "/healthz", nil, &h); err != nil {
			return err
		}
		if h.Status != "SERVING" {
			return fmt.Errorf("healthz: %q", h.Status)
		}
		return nil
	}); err != nil {
		srv.Stop()
		return nil, err
	}
	return f, nil
}

// load creates a store, writes the model and the tuples (100 per write, OpenFGA's
// default limit, 8 writers).
func (f *openFGA) load(ctx context.Context, tuples []Tuple) error {
	var st struct{ ID string }
	if err := f.call(ctx, http.MethodPost, "/stores", map[string]string{"name": "keyplane-bench"}, &st); err != nil {
		return fmt.Errorf("create store: %w", err)
	}
	f.store = st.ID
	var m struct {
		ID string `json:"authorization_model_id"`
	}
	if err := f.call(ctx, http.MethodPost, "/stores/"+f.store+"/authorization-models", json.RawMessage(fgaModel), &m); err != nil {
		return fmt.Errorf("write model: %w", err)
	}
	f.model = m.ID
	const batch = 100
	return bench.Parallel(ctx, (len(tuples)+batch-1)/batch, 8, func(ctx context.Context, k int) error {
		var keys []fgaTuple
		for _, t := range tuples[k*batch : min(len(tuples), (k+1)*batch)] {
			keys = append(keys, fgaTuple{User: t.Subject, Relation: t.Relation, Object: t.Object})
		}
		body := map[string]any{"authorization_model_id": f.model, "writes": map[string]any{"tuple_keys": keys}}
		if err := f.call(ctx, http.MethodPost, "/stores/"+f.store+"/write", body, nil); err != nil {
			return fmt.Errorf("write tuples: %w", err)
		}
		return nil
	})
}

type fgaTuple struct {
	User     string `json:"user"`
	Relation string `json:"relation"`
	Object   string `json:"object"`
}

// check asks whether user i can_view resource r, with HIGHER_CONSISTENCY (no check
// cache; read from the database).
func (f *openFGA) check(ctx context.Context, _, i, r int) (bool, error) {
	var resp struct {
		Allowed bool `json:"allowed"`
	}
	err := f.call(ctx, http.MethodPost, "/stores/"+f.store+"/check", map[string]any{
		"authorization_model_id": f.model, "consistency": "HIGHER_CONSISTENCY",
		"tuple_key": fgaTuple{User: obj(typeUser, i), Relation: "can_view", Object: obj(typeResource, r)}}, &resp)
	return resp.Allowed, err
}

func (f *openFGA) pid() int { return f.srv.Pid() }
func (f *openFGA) stop()    { f.srv.Stop() }

// call sends body as JSON and decodes a 2xx answer into out (nil: discarded).
func (f *openFGA) call(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, f.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := f.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("openfga %s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
	}
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
