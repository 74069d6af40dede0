package kubernetes_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/keyplane/keyplane/deploy"
	"github.com/keyplane/keyplane/deploy/deploytest"
)

func TestMain(m *testing.M) { os.Exit(deploytest.Run(m)) }

// rendered is one region overlay rendered by kustomize and decoded strictly.
type rendered struct {
	deployments  map[string]*appsv1.Deployment
	statefulSets map[string]*appsv1.StatefulSet
	services     map[string]*corev1.Service
	configMaps   []*corev1.ConfigMap
	jobs         map[string]*batchv1.Job
	pdbs         []*policyv1.PodDisruptionBudget
	hpas         []*autoscalingv2.HorizontalPodAutoscaler
	policies     []*networkingv1.NetworkPolicy
	accounts     []*corev1.ServiceAccount
}

// render runs kustomize (the library kubectl -k embeds) on the overlay and decodes
// every object into its k8s.io/api type, failing on any field the type lacks.
func render(t *testing.T, dir string) rendered {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	out := rendered{deployments: map[string]*appsv1.Deployment{}, statefulSets: map[string]*appsv1.StatefulSet{},
		services: map[string]*corev1.Service{}, jobs: map[string]*batchv1.Job{}}
	for _, r := range rm.Resources() {
		b, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		kind := r.GetKind()
		var obj any
		switch kind {
		case "Deployment":
			d := &appsv1.Deployment{}
			out.deployments[r.GetName()], obj = d, d
		case "StatefulSet":
			s := &appsv1.StatefulSet{}
			out.statefulSets[r.GetName()], obj = s, s
		case "Service":
			s := &corev1.Service{}
			out.services[r.GetName()], obj = s, s
		case "ConfigMap":
			c := &corev1.ConfigMap{}
			out.configMaps, obj = append(out.configMaps, c), c
		case "Job":
			j := &batchv1.Job{}
			out.jobs[r.GetName()], obj = j, j
		case "PodDisruptionBudget":
			p := &policyv1.PodDisruptionBudget{}
			out.pdbs, obj = append(out.pdbs, p), p
		case "HorizontalPodAutoscaler":
			h := &autoscalingv2.HorizontalPodAutoscaler{}
			out.hpas, obj = append(out.hpas, h), h
		case "NetworkPolicy":
			p := &networkingv1.NetworkPolicy{}
			out.policies, obj = append(out.policies, p), p
		case "ServiceAccount":
			a := &corev1.ServiceAccount{}
			out.accounts, obj = append(out.accounts, a), a
		default:
			t.Fatalf("%s renders a %s (%s): the test does not know that kind", dir, kind, r.GetName())
		}
		if err := yaml.UnmarshalStrict(b, obj); err != nil {
			t.Fatalf("%s: %s %s does not decode strictly: %v\n%s", dir, kind, r.GetName(), err, b)
		}
		if ns := r.GetNamespace(); ns != "keyplane" {
			t.Errorf("%s: %s %s is in namespace %q, want keyplane", dir, kind, r.GetName(), ns)
		}
	}
	return out
}

// flagsOf lists the flags `keyplane <command> --help` documents.
func flagsOf(t *testing.T, command string) []string {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.CommandContext(context.Background(), deploytest.Binary, command, "--help")
	cmd.Stdout, cmd.Stderr = &out, &out
	_ = cmd.Run() // --help may exit non-zero; the text is what matters
	var flags []string
	for _, m := range regexp.MustCompile(`(?m)^\s+--([a-z0-9-]+)`).FindAllStringSubmatch(out.String(), -1) {
		flags = append(flags, m[1])
	}
	if len(flags) < 5 {
		t.Fatalf("keyplane %s --help lists %d flags:\n%s", command, len(flags), out.String())
	}
	return flags
}

// secretish matches names of settings that hold secrets.
var secretish = regexp.MustCompile(`(?i)secret|password|passwd|token|kek|key|db$|dsn|credential`)

// checkContainer asserts the policies every container of ours keeps: non-root, no
// privilege escalation, all capabilities dropped, resources, and secrets only as
// files (no secret in an env literal, a secretKeyRef env or an argument).
func checkContainer(t testing.TB, where string, spec corev1.PodSpec, c corev1.Container, known []string) {
	t.Helper()
	where += "/" + c.Name
	if sc := spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 {
		t.Errorf("%s: the pod must run as a non-root user", where)
	}
	if sc := c.SecurityContext; sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Errorf("%s: want allowPrivilegeEscalation false and capabilities drop ALL", where)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("%s: want CPU and memory requests and a memory limit, got %v", where, c.Resources)
	}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			t.Errorf("%s: env %s comes from a Secret: mount secrets as files", where, e.Name)
		}
		if e.Value != "" && secretish.MatchString(e.Name) {
			t.Errorf("%s: env %s is a literal that names a secret", where, e.Name)
		}
	}
	for _, ef := range c.EnvFrom {
		if ef.SecretRef != nil {
			t.Errorf("%s: envFrom a Secret: mount secrets as files", where)
		}
	}
	for _, a := range c.Args {
		name, value, isFlag := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") || !isFlag {
			continue
		}
		if secretish.MatchString(name) && !strings.HasSuffix(name, "-file") && !strings.HasPrefix(value, "/") {
			t.Errorf("%s: argument %q puts a secret in argv: pass a file", where, a)
		}
		if known != nil && !slices.Contains(known, name) {
			t.Errorf("%s: argument %q: keyplane has no flag --%s", where, a, name)
		}
	}
}

// TestKubernetesManifests renders every region's overlay and checks the objects and the
// policies of docs: the stateless keyplane Deployment (probes, read-only root, PDB,
// HPA, topology spread, secrets as files, peer certificates naming the region), the
// services, CockroachDB with the region's locality, and the migrate Job in the primary.
func TestKubernetesManifests(t *testing.T) {
	serveFlags, migrateFlags := flagsOf(t, "serve"), flagsOf(t, "migrate")
	for _, region := range deploy.DefaultRegions {
		t.Run(region, func(t *testing.T) {
			r := render(t, "regions/"+region)
			d := r.deployments["keyplane"]
			if d == nil {
				t.Fatalf("no keyplane Deployment")
			}
			spec := d.Spec.Template.Spec
			podLabels := d.Spec.Template.Labels
			if len(spec.Containers) != 1 {
				t.Fatalf("keyplane pods run %d containers, want 1", len(spec.Containers))
			}
			c := spec.Containers[0]
			checkContainer(t, "Deployment/keyplane", spec, c, serveFlags)
			if sc := c.SecurityContext; sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Errorf("keyplane: want a read-only root filesystem")
			}
			for probe, want := range map[string]*corev1.Probe{"/readyz": c.ReadinessProbe, "/healthz": c.LivenessProbe} {
				if want == nil || want.HTTPGet == nil || want.HTTPGet.Path != probe || want.HTTPGet.Port.String() != "operator" {
					t.Errorf("keyplane: want an HTTP probe of %s on the operator port, got %+v", probe, want)
				}
			}
			if len(spec.TopologySpreadConstraints) == 0 || spec.TopologySpreadConstraints[0].TopologyKey != "topology.kubernetes.io/zone" {
				t.Errorf("keyplane: want spreading over zones")
			}
			if !strings.Contains(c.Image, "keyplane") {
				t.Errorf("keyplane image = %q", c.Image)
			}
			for _, want := range []string{"--db-file=", "--kek-file=", "--operator-secret-file=", "--gossip-key-file=", "--peer-cert=", "--peer-ca="} {
				if !slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, want) }) {
					t.Errorf("keyplane: no %s argument", want)
				}
			}
			var uriSAN string
			for _, v := range spec.Volumes {
				if v.CSI != nil && v.Name == "peer-tls" {
					uriSAN = v.CSI.VolumeAttributes["csi.cert-manager.io/uri-sans"]
				}
			}
			if want := "keyplane://" + region + "/${POD_NAME}"; uriSAN != want {
				t.Errorf("peer certificate URI SAN = %q, want %q (routing forwards only to a certificate naming the gossiped region and node)", uriSAN, want)
			}
			if !slices.ContainsFunc(c.Args, func(a string) bool { return a == "--node-id=$(POD_NAME)" }) {
				t.Errorf("keyplane: the node id must be the pod name the certificate names")
			}
			var cfg map[string]string
			for _, cm := range r.configMaps {
				if strings.HasPrefix(cm.Name, "keyplane-config") {
					cfg = cm.Data
					if !slices.ContainsFunc(c.EnvFrom, func(e corev1.EnvFromSource) bool { return e.ConfigMapRef != nil && e.ConfigMapRef.Name == cm.Name }) {
						t.Errorf("keyplane does not read the config map %s", cm.Name)
					}
				}
			}
			if cfg["KEYPLANE_REGION"] != region {
				t.Errorf("KEYPLANE_REGION = %q, want %q", cfg["KEYPLANE_REGION"], region)
			}
			// Every region names the same global issuer; a region's own name would
			// break standard OIDC clients when that region dies.
			if iss := cfg["KEYPLANE_ISSUER_BASE"]; !strings.HasPrefix(iss, "https://") || strings.Contains(iss, region) {
				t.Errorf("KEYPLANE_ISSUER_BASE = %q, want one global https name for every region", iss)
			}
			for _, other := range deploy.DefaultRegions {
				if !strings.Contains(cfg["KEYPLANE_JOIN"], "."+other+".") {
					t.Errorf("KEYPLANE_JOIN = %q does not join region %s", cfg["KEYPLANE_JOIN"], other)
				}
			}
			for name := range cfg {
				if flag, ok := strings.CutPrefix(name, "KEYPLANE_"); ok && !slices.Contains(serveFlags, strings.ReplaceAll(strings.ToLower(flag), "_", "-")) {
					t.Errorf("config %s sets no serve flag", name)
				}
			}

			selects := func(sel map[string]string) bool {
				for k, v := range sel {
					if podLabels[k] != v {
						return false
					}
				}
				return len(sel) > 0
			}
			api, gossip := r.services["keyplane"], r.services["keyplane-gossip"]
			if api == nil || !selects(api.Spec.Selector) || api.Spec.Ports[0].TargetPort.String() != "api" {
				t.Errorf("the client Service does not select the keyplane pods' api port: %+v", api)
			}
			if gossip == nil || gossip.Spec.ClusterIP != "None" || !gossip.Spec.PublishNotReadyAddresses || !selects(gossip.Spec.Selector) {
				t.Errorf("the gossip Service must be headless, publish not-ready pods and select keyplane: %+v", gossip)
			}
			if len(r.pdbs) != 2 || !slices.ContainsFunc(r.pdbs, func(p *policyv1.PodDisruptionBudget) bool { return selects(p.Spec.Selector.MatchLabels) }) {
				t.Errorf("want a PodDisruptionBudget for keyplane and one for CockroachDB")
			}
			if len(r.hpas) != 1 || r.hpas[0].Spec.ScaleTargetRef.Name != "keyplane" || r.hpas[0].Spec.ScaleTargetRef.Kind != "Deployment" ||
				r.hpas[0].Spec.Metrics[0].Resource == nil || r.hpas[0].Spec.Metrics[0].Resource.Name != corev1.ResourceCPU {
				t.Errorf("want an HPA on CPU scaling the keyplane Deployment")
			}
			if len(r.policies) != 1 || !selects(r.policies[0].Spec.PodSelector.MatchLabels) {
				t.Errorf("want a NetworkPolicy for keyplane")
			}

			crdb := r.statefulSets["cockroachdb"]
			if crdb == nil {
				t.Fatalf("no cockroachdb StatefulSet")
			}
			cc := crdb.Spec.Template.Spec.Containers[0]
			checkContainer(t, "StatefulSet/cockroachdb", crdb.Spec.Template.Spec, cc, nil)
			if !slices.Contains(cc.Args, "--locality=region="+region) {
				t.Errorf("cockroachdb args %v lack --locality=region=%s", cc.Args, region)
			}
			if cc.ReadinessProbe == nil || len(crdb.Spec.VolumeClaimTemplates) != 1 {
				t.Errorf("cockroachdb needs a readiness probe and a volume claim")
			}

			job, hasJob := r.jobs["keyplane-migrate"]
			if primary := region == deploy.DefaultRegions[0]; primary != hasJob {
				t.Fatalf("migrate Job present = %v, want it only in the primary region", hasJob)
			}
			if hasJob {
				jc := job.Spec.Template.Spec.Containers[0]
				checkContainer(t, "Job/keyplane-migrate", job.Spec.Template.Spec, jc, migrateFlags)
				want := "--regions=" + strings.Join(deploy.DefaultRegions, ",")
				if jc.Args[0] != "migrate" || !slices.Contains(jc.Args, want) || !slices.Contains(jc.Args, "--survive=region") {
					t.Errorf("migrate args = %v, want migrate %s --survive=region", jc.Args, want)
				}
			}
		})
	}
}

// TestKubernetesRejectsMistakes: the checks above are not vacuous — a manifest with a
// secret in argv, a root user or an unknown field fails them.
func TestKubernetesRejectsMistakes(t *testing.T) {
	root, no := int64(0), false
	spec := corev1.PodSpec{SecurityContext: &corev1.PodSecurityContext{RunAsUser: &root, RunAsNonRoot: &no}}
	c := corev1.Container{Name: "x", Args: []string{"serve", "--operator-secret=hunter2hunter2", "--no-such-flag=1"},
		Env: []corev1.EnvVar{{Name: "KEYPLANE_KEK", Value: "c2VjcmV0"}}}
	ft := &fakeT{}
	checkContainer(ft.T(t), "bad", spec, c, []string{"operator-secret"})
	for _, want := range []string{"non-root", "allowPrivilegeEscalation", "requests", "env KEYPLANE_KEK", "secret in argv", "no flag --no-such-flag"} {
		if !slices.ContainsFunc(ft.errors, func(e string) bool { return strings.Contains(e, want) }) {
			t.Errorf("a container breaking %q passed; errors: %q", want, ft.errors)
		}
	}
	var d appsv1.Deployment
	if err := yaml.UnmarshalStrict([]byte("apiVersion: apps/v1\nkind: Deployment\nspec:\n  replicaz: 3\n"), &d); err == nil {
		t.Errorf("strict decoding accepted an unknown field")
	}
}

// fakeT collects a check's errors instead of failing the test.
type fakeT struct {
	testing.TB
	errors []string
}

func (f *fakeT) T(t *testing.T) *fakeT { f.TB = t; return f }

func (f *fakeT) Errorf(format string, args ...any) {
	f.errors = append(f.errors, fmt.Sprintf(format, args...))
}
