package chaos

import (
	"os"
	"testing"

	"github.com/gregor-streaming/gregor/chaos/workload"
	"github.com/gregor-streaming/gregor/internal/testcluster"
)

// TestMain builds the node binaries without the race detector: the scenarios judge
// behaviour under faults in time, which nodes slowed several times over distort, and
// the node code runs under the detector in the other packages' tests.
//
// The test binary is also the transactional producers' process (R15): started again
// with workload.TxnProducerEnv set, it runs one producer and no test.
func TestMain(m *testing.M) {
	if workload.IsTxnProducerProcess() {
		os.Exit(workload.RunTxnProducerProcess())
	}
	testcluster.Main(m, testcluster.NodesWithoutRace())
}
