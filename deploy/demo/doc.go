// Package demo is the scenario behind `keyplane demo`: a local multi-region cluster
// (deploy.Start) with one tenant homed in each region, a cross-region tour that issues,
// checks and revokes a token from applications placed in different regions, and the
// instructions and state file for trying the cluster by hand.
//
// Start brings the scenario up and returns once the state file is written, so
// whoever waits for the file finds the cluster seeded; Stop removes everything Start
// made. Run does both around a context that ends the demo.
package demo
