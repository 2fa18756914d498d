// Package gregor_test holds repository-wide checks.
package gregor_test

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/gregor-streaming/gregor"

// deps lists the packages pkg depends on, through `go list -deps`.
func deps(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", pkg).Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	return strings.Fields(string(out))
}

// TestDependencyDirection keeps the layering of docs/architecture.md: the leaf packages (proto,
// segment, sendfile) import neither the data plane nor the control plane, and the data
// plane reaches the control plane only through controlplane/client (and the cluster
// model it shares, controlplane/cluster). The control plane's own arrows are checked by
// controlplane/deps_test.go.
func TestDependencyDirection(t *testing.T) {
	rules := []struct {
		pkg       string
		forbidden []string
		allowed   []string
	}{
		{"proto", []string{"dataplane", "controlplane", "segment", "sendfile"}, nil},
		{"segment", []string{"dataplane", "controlplane", "sendfile"}, nil},
		{"sendfile", []string{"dataplane", "controlplane", "segment"}, nil},
		{"dataplane", []string{"controlplane"}, []string{"controlplane/client", "controlplane/cluster"}},
	}
	for _, r := range rules {
		t.Run(r.pkg, func(t *testing.T) {
			for _, d := range deps(t, module+"/"+r.pkg) {
				rel, ours := strings.CutPrefix(d, module+"/")
				if !ours {
					continue
				}
				for _, f := range r.forbidden {
					if rel != f && !strings.HasPrefix(rel, f+"/") {
						continue
					}
					ok := false
					for _, a := range r.allowed {
						if rel == a || strings.HasPrefix(rel, a+"/") {
							ok = true
						}
					}
					if !ok {
						t.Errorf("%s depends on %s", r.pkg, rel)
					}
				}
			}
		})
	}
}
