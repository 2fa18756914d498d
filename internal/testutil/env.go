package testutil

import (
	"os"
	"testing"
)

// testLogs is whether GREGOR_TEST_LOG asks for the nodes' logs (on stderr).
var testLogs = os.Getenv("GREGOR_TEST_LOG") != ""

var logOut = os.Stderr

// TestDepsEnv is set by `make test` once its test-deps step has installed the clients
// and peers the tests drive (scripts/install-*.sh, Debian packages).
const TestDepsEnv = "GREGOR_TEST_DEPS"

// NeedDep skips t when a dependency outside Go is missing (err is why; install says how
// to get it) — unless `make test` installed the dependencies (TestDepsEnv) or CI is set,
// where a missing one fails t: a test that CI would skip proves nothing.
func NeedDep(t testing.TB, err error, install string) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv(TestDepsEnv) != "" || os.Getenv("CI") != "" {
		t.Fatalf("%v: %s (make test installs it)", err, install)
	}
	t.Skipf("%v: %s (make test installs it)", err, install)
}
