package chaos

import (
	"testing"

	"github.com/gregor-streaming/gregor/internal/testcluster"
)

// TestMain builds the node binaries without the race detector: the scenarios judge
// behaviour under faults in time, which nodes slowed several times over distort, and
// the node code runs under the detector in the other packages' tests.
func TestMain(m *testing.M) { testcluster.Main(m, testcluster.NodesWithoutRace()) }
