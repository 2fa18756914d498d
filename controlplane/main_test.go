// The control-plane node's tests run on the shared cluster harness (internal/testcluster):
// control-plane members in the test process, and fake data-plane nodes — registrations
// with no node behind them — where a scenario needs registered nodes.
package controlplane_test

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/gregor-streaming/gregor/controlplane"
	"github.com/gregor-streaming/gregor/internal/testcluster"
	"github.com/gregor-streaming/gregor/internal/testutil"
)

func TestMain(m *testing.M) {
	// Members being stopped make etcd's gRPC warn a lot.
	controlplane.SetGRPCLogger(testutil.Quiet())
	os.Exit(m.Run())
}

// newControlPlane starts n control-plane members and no data-plane nodes.
func newControlPlane(t testing.TB, n int) *testcluster.Cluster {
	t.Helper()
	return testcluster.New(t, testcluster.Options{ControlPlanes: n, ControlPlaneOnly: true})
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}
