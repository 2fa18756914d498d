package controlplane

import (
	"go/build"
	"go/token"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// controlPlaneImports is the control plane's package map: for each package (relative to
// the module), the packages of this module it may import. The arrows point one way —
// the node wires the controller and the group coordinator; both, and the client, stand
// on the cluster model; nothing imports the node — so that each part can be tested,
// and moved, on its own. A package missing here fails the test: add it with its arrows.
var controlPlaneImports = map[string][]string{
	"controlplane": {
		"controlplane/client", "controlplane/client/zapslog", "controlplane/cluster",
		"controlplane/controller", "controlplane/groups",
	},
	"controlplane/controller":     {"controlplane/client", "controlplane/cluster"},
	"controlplane/groups":         {"controlplane/cluster"},
	"controlplane/client":         {"controlplane/client/zapslog", "controlplane/cluster"},
	"controlplane/client/zapslog": {},
	"controlplane/cluster":        {},
	// Test helpers, for tests only (below).
	"controlplane/internal/grouptest": {},
}

// testImports are what any package's tests may import on top of its own arrows.
var testImports = []string{"internal/testutil", "controlplane/internal/grouptest"}

const modulePath = "github.com/gregor-streaming/gregor/"

// TestControlPlaneDependencies reads every control-plane package's imports (go/build)
// and fails on each import of this module that its entry in controlPlaneImports does
// not allow, naming the file and line of the offending import.
func TestControlPlaneDependencies(t *testing.T) {
	seen := map[string]bool{}
	err := filepath.WalkDir(".", func(dir string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		if name := d.Name(); dir != "." && (strings.HasPrefix(name, ".") || name == "testdata") {
			return filepath.SkipDir
		}
		pkg, err := build.ImportDir(dir, 0)
		if _, none := err.(*build.NoGoError); none {
			return nil
		}
		if err != nil {
			return err
		}
		rel := filepath.ToSlash(filepath.Join("controlplane", dir))
		seen[rel] = true
		allowed, ok := controlPlaneImports[rel]
		if !ok {
			t.Errorf("%s is not in controlPlaneImports: add it with the packages it may import", rel)
			return nil
		}
		check := func(imports map[string][]token.Position, forTests bool) {
			for path, pos := range imports {
				ours, isOurs := strings.CutPrefix(path, modulePath)
				if !isOurs || ours == rel || slices.Contains(allowed, ours) ||
					forTests && slices.Contains(testImports, ours) {
					continue
				}
				t.Errorf("%s imports %s (%s): not one of its arrows %v", rel, ours, pos[0], allowed)
			}
		}
		check(pkg.ImportPos, false)
		check(pkg.TestImportPos, true)
		check(pkg.XTestImportPos, true)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for pkg := range controlPlaneImports {
		if !seen[pkg] {
			t.Errorf("controlPlaneImports lists %s, which does not exist", pkg)
		}
	}
}
