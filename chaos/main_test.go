package chaos

import (
	"testing"

	"github.com/gregor-streaming/gregor/internal/testcluster"
)

func TestMain(m *testing.M) { testcluster.Main(m) }
