//go:build race

package testcluster

// raceEnabled: the test binary runs under the race detector, and so do the node
// binaries the harness builds.
const raceEnabled = true
