// The repository-wide checks.
package gregor_test

import (
	"go/build"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// packageMap is the module's package map: for each package (relative to the module
// root), the packages of this module its code may import. The arrows point one way,
// from the programs down to the leaves:
//
//	cmd/dp ──► node ──► dataplane ──► replica ──► segment ──► proto
//	            │          │    └───► sendfile
//	            │          ▼
//	            └────► controlplane/client ──► controlplane/cluster
//	                                                   ▲
//	cmd/cp ──► controlplane ──► controlplane/{controller, groups, txn}
//
// The leaves (proto, segment, sendfile) know nothing of the rest; replica, the home of
// replication, knows storage but neither request handling nor the control plane; the
// data plane reaches the control plane only through its client; the control plane never
// imports the data plane. docs/architecture.md draws the same map. A package missing
// here fails the test: add it with its arrows.
var packageMap = map[string][]string{
	"proto":    {},
	"sendfile": {},
	"segment":  {"proto"},
	"replica":  {"proto", "segment"},
	"dataplane": {
		"controlplane/client", "controlplane/cluster", "proto", "replica", "segment", "sendfile",
	},

	"controlplane/cluster":          {},
	"controlplane/api":              {},
	"controlplane/client/zapslog":   {},
	"controlplane/client":           {"controlplane/client/zapslog", "controlplane/cluster", "proto"},
	"controlplane/controller":       {"controlplane/client", "controlplane/cluster"},
	"controlplane/internal/kvstore": {},
	"controlplane/internal/term":    {"controlplane/internal/kvstore"},
	"controlplane/groups":           {"controlplane/cluster", "controlplane/internal/kvstore", "controlplane/internal/term"},
	"controlplane/txn": {
		"controlplane/client", "controlplane/cluster", "controlplane/internal/kvstore", "controlplane/internal/term",
	},
	"controlplane": {
		"controlplane/api", "controlplane/client", "controlplane/client/zapslog", "controlplane/cluster",
		"controlplane/controller", "controlplane/groups", "controlplane/txn", "internal/reserve", "proto",
	},

	"node":             {"controlplane/client", "controlplane/cluster", "dataplane", "internal/reserve"},
	"internal/reserve": {},

	"cmd/cp":           {"controlplane", "node"},
	"cmd/dp":           {"dataplane", "node", "proto", "segment"},
	"cmd/gregor":       {"controlplane/api", "perf", "perf/drivers", "perf/replication", "perf/txn"},
	"perf":             {},
	"perf/drivers":     {"internal/reserve", "perf", "proto"},
	"perf/replication": {"perf", "perf/drivers"},
	"perf/txn":         {"perf"},

	// The fault suite: what a run records, its checker, the workload that drives a
	// cluster, and the scenarios (package chaos's tests, on internal/testcluster).
	"chaos/history":  {},
	"chaos/checker":  {"chaos/history"},
	"chaos/workload": {"chaos/history", "proto", "segment"},
	"chaos":          {"chaos/checker", "chaos/history", "chaos/workload"},

	// Helpers for tests only (testOnly below).
	"internal/testutil": {},
	"internal/testcluster": {
		"controlplane", "controlplane/client", "controlplane/cluster", "internal/reserve",
		"internal/testutil", "node",
	},
	"controlplane/internal/grouptest": {},
	"internal/powerloss":              {"segment"},
	".":                               {},
}

// testOnly are the packages that only tests import, from any package.
var testOnly = []string{"internal/testutil", "internal/testcluster", "controlplane/internal/grouptest", "internal/powerloss"}

const modulePath = "github.com/gregor-streaming/gregor/"

// TestPackageMap reads every package's imports (go/build: no build of its own) and fails
// on each import of this module that packageMap does not allow, naming the file and
// line of the import. Tests may also import the test helpers, and packages above their
// own (an end-to-end test of dataplane through a whole node) as Go's cycle rule lets them.
func TestPackageMap(t *testing.T) {
	seen := map[string]bool{}
	err := filepath.WalkDir(".", func(dir string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		if name := d.Name(); dir != "." && (strings.HasPrefix(name, ".") || name == "testdata" || name == "node_modules") {
			return filepath.SkipDir
		}
		pkg, err := build.ImportDir(dir, 0)
		if _, none := err.(*build.NoGoError); none {
			return nil
		}
		if err != nil {
			return err
		}
		rel := filepath.ToSlash(dir)
		seen[rel] = true
		allowed, ok := packageMap[rel]
		if !ok {
			t.Errorf("%s is not in packageMap: add it with the packages it may import", rel)
			return nil
		}
		for path, pos := range pkg.ImportPos {
			ours, isOurs := strings.CutPrefix(path, modulePath)
			switch {
			case !isOurs || slices.Contains(allowed, ours):
			case slices.Contains(testOnly, ours) && !slices.Contains(testOnly, rel):
				t.Errorf("%s imports the test helper %s outside a test (%s)", rel, ours, pos[0])
			default:
				t.Errorf("%s imports %s (%s): not one of its arrows %v", rel, ours, pos[0], allowed)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for pkg := range packageMap {
		if !seen[pkg] {
			t.Errorf("packageMap lists %s, which does not exist", pkg)
		}
	}
}
