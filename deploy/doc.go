// Package deploy launches a local keyplane cluster: one private PostgreSQL and
// `keyplane serve` processes per region on 127.0.0.1. The demo, benchmarks and chaos
// drills use it; deploy/cockroach and deploy/kubernetes hold what runs a real
// multi-region deployment.
package deploy
