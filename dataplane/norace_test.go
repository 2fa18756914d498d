//go:build !race

package dataplane

// raceEnabled: the race detector is on (see race_test.go).
const raceEnabled = false
