//go:build !race

package testcluster

// raceEnabled: see race_on.go.
const raceEnabled = false
