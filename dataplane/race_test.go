//go:build race

package dataplane

// raceEnabled: the race detector is on. sync.Pool then drops a share of what is put
// back on purpose, so pooled buffers are allocated again.
const raceEnabled = true
