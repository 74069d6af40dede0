package tracing

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// Resource attribute keys keyplane adds to every span it exports, beside
// service.name=keyplane, service.version and service.instance.id (the node id).
const (
	RegionKey = attribute.Key("keyplane.region")
	NodeKey   = attribute.Key("keyplane.node")
)

// Resource names the process in the spans it exports.
type Resource struct {
	Region  string // keyplane.region
	NodeID  string // keyplane.node and service.instance.id
	Version string // service.version; empty leaves it out
}

// Samplers keyplane accepts in OTEL_TRACES_SAMPLER (the OpenTelemetry names).
var samplers = []string{"always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off", "parentbased_traceidratio"}

// The sampler when OTEL_TRACES_SAMPLER is unset: a new trace is sampled with
// probability DefaultRatio (or OTEL_TRACES_SAMPLER_ARG), a continued one as its
// parent was (docs/decisions/0015-tracing.md says why not every request).
const (
	DefaultSampler = "parentbased_traceidratio"
	DefaultRatio   = 0.1
)

// Settings is what the OTEL_* environment asks of tracing; ParseEnv reads it. The zero
// value is tracing off.
type Settings struct {
	// Exporters are "otlp" and "console" (spans printed as JSON to Console); none means
	// tracing is off.
	Exporters []string
	// Protocol is the OTLP protocol: "http/protobuf" (the default) or "grpc". The
	// exporter reads its endpoint, headers, TLS files, compression and timeout from the
	// standard OTEL_EXPORTER_OTLP_* variables itself.
	Protocol string
	// Sampler is an OTEL_TRACES_SAMPLER name; Ratio the probability of the *traceidratio
	// ones.
	Sampler string
	Ratio   float64
	// Console is where the console exporter writes; nil means standard error.
	Console io.Writer
}

// On reports whether the settings turn tracing on.
func (s Settings) On() bool { return len(s.Exporters) > 0 }

// String describes the settings for a log line.
func (s Settings) String() string {
	if !s.On() {
		return "off"
	}
	out := "exporters=" + strings.Join(s.Exporters, ",")
	if slices.Contains(s.Exporters, "otlp") {
		out += " protocol=" + s.Protocol
	}
	out += " sampler=" + s.Sampler
	if strings.HasSuffix(s.Sampler, "traceidratio") {
		out += "(" + strconv.FormatFloat(s.Ratio, 'g', -1, 64) + ")"
	}
	return out
}

// ParseEnv reads the tracing settings from the environment (getenv is os.Getenv
// outside tests):
//
//   - OTEL_SDK_DISABLED=true turns tracing off whatever else is set.
//   - OTEL_TRACES_EXPORTER: otlp, console, or both comma-separated; none turns tracing
//     off. Unset, tracing is on (otlp) only when OTEL_EXPORTER_OTLP_ENDPOINT or
//     OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set: keyplane does not trace by default.
//   - OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, else OTEL_EXPORTER_OTLP_PROTOCOL:
//     http/protobuf (default) or grpc.
//   - OTEL_TRACES_SAMPLER: always_on, always_off, traceidratio, parentbased_always_on,
//     parentbased_always_off or parentbased_traceidratio (default, see
//     DefaultSampler); OTEL_TRACES_SAMPLER_ARG: the ratio, 0 to 1 (default
//     DefaultRatio).
//
// An unknown or malformed value is an error naming its variable. The exporter reads
// the other OTEL_EXPORTER_OTLP_* variables, the batch processor OTEL_BSP_*, and the
// resource OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME.
func ParseEnv(getenv func(string) string) (Settings, error) {
	var s Settings
	if v := strings.TrimSpace(getenv("OTEL_SDK_DISABLED")); v != "" {
		off, err := strconv.ParseBool(v)
		if err != nil {
			return s, fmt.Errorf("OTEL_SDK_DISABLED: want true or false, got %q", v)
		}
		if off {
			return s, nil
		}
	}
	exporters := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER"))
	if exporters == "" {
		if getenv("OTEL_EXPORTER_OTLP_ENDPOINT") == "" && getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") == "" {
			return s, nil
		}
		exporters = "otlp"
	}
	for e := range strings.SplitSeq(exporters, ",") {
		switch e = strings.TrimSpace(e); e {
		case "otlp", "console":
			if !slices.Contains(s.Exporters, e) {
				s.Exporters = append(s.Exporters, e)
			}
		case "none":
		default:
			return Settings{}, fmt.Errorf("OTEL_TRACES_EXPORTER: want otlp, console or none (comma-separated), got %q", e)
		}
	}
	if !s.On() {
		return s, nil
	}
	s.Protocol = "http/protobuf"
	for _, name := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			if v != "http/protobuf" && v != "grpc" {
				return Settings{}, fmt.Errorf("%s: want http/protobuf or grpc, got %q", name, v)
			}
			s.Protocol = v
			break
		}
	}
	s.Sampler = strings.TrimSpace(getenv("OTEL_TRACES_SAMPLER"))
	if s.Sampler == "" {
		s.Sampler = DefaultSampler
	}
	if !slices.Contains(samplers, s.Sampler) {
		return Settings{}, fmt.Errorf("OTEL_TRACES_SAMPLER: want one of %s, got %q", strings.Join(samplers, ", "), s.Sampler)
	}
	s.Ratio = DefaultRatio
	if v := strings.TrimSpace(getenv("OTEL_TRACES_SAMPLER_ARG")); v != "" && strings.HasSuffix(s.Sampler, "traceidratio") {
		r, err := strconv.ParseFloat(v, 64)
		if err != nil || r < 0 || r > 1 {
			return Settings{}, fmt.Errorf("OTEL_TRACES_SAMPLER_ARG: want a ratio from 0 to 1 for %s, got %q", s.Sampler, v)
		}
		s.Ratio = r
	}
	return s, nil
}

// sampler builds the settings' sampler.
func (s Settings) sampler() sdktrace.Sampler {
	base, parent := strings.CutPrefix(s.Sampler, "parentbased_")
	var root sdktrace.Sampler
	switch base {
	case "always_on":
		root = sdktrace.AlwaysSample()
	case "always_off":
		root = sdktrace.NeverSample()
	default:
		root = sdktrace.TraceIDRatioBased(s.Ratio)
	}
	if parent {
		return sdktrace.ParentBased(root)
	}
	return root
}

// New builds a tracer provider with s's exporters (each behind a batch span
// processor, which drops spans rather than block a request when its queue is full)
// and sampler, naming res. It returns nil when s turns tracing off. Shut the provider
// down before exiting: that flushes the spans still queued.
func New(ctx context.Context, s Settings, res Resource) (*sdktrace.TracerProvider, error) {
	if !s.On() {
		return nil, nil
	}
	r, err := resource.New(ctx,
		resource.WithSchemaURL(semconv.SchemaURL),
		resource.WithTelemetrySDK(),
		resource.WithAttributes(semconv.ServiceName("keyplane")),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES may rename the service
		resource.WithAttributes(res.attributes()...),
	)
	if err != nil {
		return nil, fmt.Errorf("tracing resource (OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME): %w", err)
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(r), sdktrace.WithSampler(s.sampler())}
	var exporters []sdktrace.SpanExporter
	for _, e := range s.Exporters {
		var exp sdktrace.SpanExporter
		switch {
		case e == "console":
			w := s.Console
			if w == nil {
				w = os.Stderr
			}
			exp, err = stdouttrace.New(stdouttrace.WithWriter(w))
		case s.Protocol == "grpc":
			exp, err = otlptracegrpc.New(ctx)
		default:
			exp, err = otlptracehttp.New(ctx)
		}
		if err != nil {
			for _, made := range exporters {
				_ = made.Shutdown(ctx)
			}
			return nil, fmt.Errorf("tracing exporter %s: %w", e, err)
		}
		exporters = append(exporters, exp)
		opts = append(opts, sdktrace.WithBatcher(exp))
	}
	return sdktrace.NewTracerProvider(opts...), nil
}

func (res Resource) attributes() []attribute.KeyValue {
	attrs := []attribute.KeyValue{RegionKey.String(res.Region), NodeKey.String(res.NodeID), semconv.ServiceInstanceID(res.NodeID)}
	if res.Version != "" {
		attrs = append(attrs, semconv.ServiceVersion(res.Version))
	}
	return attrs
}
